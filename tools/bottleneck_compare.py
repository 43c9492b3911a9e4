"""The same small model, data and steps with each bottleneck (vae, fsq, rvq): quality against bitrate.

For each bottleneck this writes the demo's own config (`lyra.apps.demo.demo_config(OUT, NAME)`,
as configs/demo-NAME.toml is written), trains it through the real command line (`lyra train
CFG --set optim.max_steps=S --set runtime.threads=T`, one run at a time), then measures the
demo's held-out clips (the whole files of OUT/data/val, never trained on) with `lyra eval
OUT/data/val -c RUN/latest.pt --json`:

- vae: at each float storage of a .lyra file (``--dtype float16`` and ``int8`` by default); its
  bitrate is what `lyra info --json` reports for a held-out clip encoded with that ``--dtype``;
- fsq: its one bitrate (all groups decode together);
- rvq: at every bitrate it decodes, its first 1..Q quantisers (`lyra eval` does that itself).

Writes OUT/bottleneck_compare.md (a Markdown table for BENCHMARKS.md) and OUT/results.json, and
prints the table.

    python tools/bottleneck_compare.py                          # 300 steps each (the demo's), 1 thread
    python tools/bottleneck_compare.py --steps 20 --out /tmp/bc # a quick look
    python tools/bottleneck_compare.py --bottlenecks rvq --threads 2
    python tools/bottleneck_compare.py --reuse                  # retrain only the runs whose config changed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from lyra.apps.demo import DEMO_BOTTLENECKS, demo_config, demo_toml_header, synthesise_data
from lyra.train.config import commented_toml


def lyra_executable() -> str:
    """The installed `lyra` entry point beside this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).with_name("lyra")
    found = str(beside) if beside.exists() else shutil.which("lyra")
    if not found:
        raise SystemExit("bottleneck_compare: the `lyra` entry point is not installed (pip install -e .)")
    return found


def lyra(*args: object, log: Path | None = None) -> str:
    """Run `lyra ARGS...`; its stdout (stderr, and stdout too when `log` is given, go to `log`)."""
    cmd = [lyra_executable(), *map(str, args)]
    print("$ lyra " + " ".join(map(str, args)), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise SystemExit(f"bottleneck_compare: `lyra {' '.join(map(str, args))}` failed "
                         f"({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def train(name: str, out: Path, steps: int, threads: int, reuse: bool = False) -> tuple[Path, float, dict]:
    """Train the demo's run with bottleneck `name`: (its latest.pt, wall seconds, last train log
    record). `reuse`: keep a finished run of the same config, steps and threads instead."""
    cfg = demo_config(out, name)
    config = out / "configs" / f"demo-{name}.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(commented_toml(cfg, demo_toml_header(name)))
    run_dir = Path(cfg.run_dir)
    done = out / "logs" / f"train-{name}.done.json"        # what a finished run was trained with
    facts = dict(config=config.read_text(), steps=steps, threads=threads)
    if reuse and done.exists() and json.loads(done.read_text())["facts"] == facts and (run_dir / "latest.pt").exists():
        print(f"reusing {run_dir} (trained with this config and {steps} steps)", flush=True)
        seconds = json.loads(done.read_text())["seconds"]
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)                      # a fresh run, never a resumed one
        done.unlink(missing_ok=True)
        started = time.perf_counter()
        lyra("train", config, "--set", f"optim.max_steps={steps}", "--set", f"runtime.threads={threads}",
             "--set", "logging.progress=lines", log=out / "logs" / f"train-{name}.log")
        seconds = time.perf_counter() - started
        done.write_text(json.dumps(dict(facts=facts, seconds=seconds)))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = ([r for r in records if r.get("split") == "train"] or [{}])[-1]   # none if steps < log_every
    return run_dir / "latest.pt", seconds, last


def measure(name: str, checkpoint: Path, out: Path, threads: int, dtypes: list[str]) -> list[dict]:
    """`lyra eval` of the held-out clips: one row per bitrate."""
    val = out / "data" / "val"
    log = out / "logs" / f"eval-{name}.log"
    if name != "vae":
        result = json.loads(lyra("eval", val, "-c", checkpoint, "--json", "--quiet", "--threads", threads, log=log))
        return [dict(bottleneck=name, quantizers=r["quantizers"], kbit_s=r["kbit_s"], storage="codes", **r["mean"])
                for r in result["bitrates"]]
    rows = []
    clip = sorted(val.glob("*.wav"))[0]
    for dtype in dtypes:
        encoded = out / "logs" / f"vae-{dtype}.lyra"
        encoded.unlink(missing_ok=True)
        lyra("encode", clip, encoded, "-c", checkpoint, "--dtype", dtype, "--quiet", "--threads", threads, log=log)
        kbit_s = json.loads(lyra("info", encoded, "--json"))["latent_kbps"]
        result = json.loads(lyra("eval", val, "-c", checkpoint, "--dtype", dtype, "--json", "--quiet",
                                 "--threads", threads, log=log))
        rows.append(dict(bottleneck=name, quantizers=None, kbit_s=kbit_s, storage=dtype, **result["mean"]))
    return rows


def markdown(rows: list[dict], runs: dict[str, dict]) -> str:
    lines = ["| bottleneck | storage | quantisers | kbit/s | SI-SDR (dB) | STFT distance | mel distance |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        q = "-" if r["quantizers"] is None else str(r["quantizers"])
        lines.append(f"| {r['bottleneck']} | {r['storage']} | {q} | {r['kbit_s']:.2f} | {r['si_sdr_db']:.2f} | "
                     f"{r['stft_distance']:.3f} | {r['mel_distance']:.3f} |")
    lines += ["", "| bottleneck | parameters | training wall time | last training log: loss | codebook usage (mean over quantisers) | perplexity (mean) |",
              "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        last = run["last"]
        usage = [v for k, v in last.items() if k.startswith("usage_q")]
        perplexity = [v for k, v in last.items() if k.startswith("perplexity_q")]
        u = f"{sum(usage) / len(usage):.3f}" if usage else "-"
        p = f"{sum(perplexity) / len(perplexity):.1f}" if perplexity else "-"
        lines.append(f"| {name} | {run['parameters']:,} | {run['seconds'] / 60:.1f} min | {last.get('loss', float('nan')):.3f} | {u} | {p} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bottleneck-compare"), help="folder for data, runs, results")
    parser.add_argument("--steps", type=int, default=demo_config().optim.max_steps, help="training steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and eval")
    parser.add_argument("--bottlenecks", nargs="+", default=list(DEMO_BOTTLENECKS), choices=list(DEMO_BOTTLENECKS))
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs in OUT already trained with the same config, steps and threads")
    parser.add_argument("--dtypes", nargs="+", default=["float16", "int8"], help="the vae's .lyra storages to measure")
    args = parser.parse_args(argv)

    import torch

    from lyra.model.checkpoint import load_model

    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    synthesise_data(demo_config(out))                   # the demo's data: 32 training, 4 held-out clips
    started = datetime.now()
    rows, runs = [], {}
    for name in args.bottlenecks:
        checkpoint, seconds, last = train(name, out, args.steps, args.threads, args.reuse)
        parameters = sum(p.numel() for p in load_model(checkpoint).parameters())
        runs[name] = dict(seconds=seconds, last=last, parameters=parameters)
        rows += measure(name, checkpoint, out, args.threads, args.dtypes)
    table = markdown(rows, runs)
    facts = dict(date=started.isoformat(timespec="minutes"), steps=args.steps, threads=args.threads,
                 torch=torch.__version__, machine=platform.machine(), cpus=os.cpu_count(),
                 command=" ".join(["python tools/bottleneck_compare.py", *(argv if argv is not None else sys.argv[1:])]))
    (out / "results.json").write_text(json.dumps(dict(facts, rows=rows, runs=runs), indent=2))
    (out / "bottleneck_compare.md").write_text(table)
    print(json.dumps(facts))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
