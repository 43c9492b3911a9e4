"""Training throughput and peak memory, eager versus compiled blocks (BENCHMARKS.md, "Training").

    python -m lyra.apps.benchmark                 # the demo config, 40 measured steps each, 3 rounds
    python -m lyra.apps.benchmark --steps 100 --threads 2 --repeats 5

Each variant trains the demo config (synthesised data in a temporary folder, no validation)
in a fresh process, so its peak resident memory is its own: a few warm-up steps (where
`torch.compile` does its work), then measured steps. Throughput is seconds of audio trained
per wall-clock second (steps x batch x crop length / sample rate / time). The variants run in
alternation, `--repeats` rounds, and the table gives each one's median round, with the load
average seen during the rounds (on a shared machine, other work slows both alike).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def measure(data: Path, compile: bool, warmup: int, steps: int, threads: int) -> dict:
    """Train warmup + steps steps of the demo config in this process; timings and peak RSS."""
    from lyra.apps.demo import demo_config
    from lyra.train.engine import train
    from lyra.train.metrics_log import read_metrics

    cfg = demo_config(data)
    with tempfile.TemporaryDirectory() as run:
        cfg = replace(
            cfg, run_dir=run,
            optim=replace(cfg.optim, max_steps=warmup + steps),
            runtime=replace(cfg.runtime, compile=compile, threads=threads),
            logging=replace(cfg.logging, log_every=1, eval_every=10**9, progress="off"),
            checkpoint=replace(cfg.checkpoint, save_every=10**9),
            data=replace(cfg.data, val_dir=None, val_fraction=0.0),
        )
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        train(cfg, stream=sys.stderr)
        total = time.perf_counter() - started
        records = [r for r in read_metrics(Path(run) / "metrics.jsonl") if r["split"] == "train"]
    measured = [r for r in records if r["step"] > warmup]
    audio_per_step = cfg.data.batch_size * cfg.data.segment_length / cfg.model.sample_rate
    seconds = sum(audio_per_step / r["audio_s_per_s"] for r in measured)
    return {
        "compile": compile, "steps": len(measured), "audio_s_per_s": len(measured) * audio_per_step / seconds,
        "step_ms": 1000 * seconds / len(measured), "total_s": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_training_mib": rss_before / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured first steps (compilation happens here)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the training process")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of eager + compiled, alternating")
    parser.add_argument("--one", choices=["eager", "compiled"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(measure(args.data, args.one == "compiled", args.warmup, args.steps, args.threads)))
        return
    from lyra.apps.demo import CLIP_SECONDS, TRAIN_FILES
    from lyra.audio.synth import write_dataset

    import os
    import statistics

    runs: dict[str, list[dict]] = {"eager": [], "compiled": []}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "data" / "train", TRAIN_FILES, CLIP_SECONDS, seed=1)
        for _ in range(args.repeats):
            for variant in runs:
                loads.append(os.getloadavg()[0])
                out = subprocess.run(
                    [sys.executable, "-m", "lyra.apps.benchmark", "--one", variant, "--data", tmp,
                     "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)],
                    check=True, stdout=subprocess.PIPE, text=True)
                runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"demo config (small model, batch 4 x 16,384 samples), {args.threads} thread(s), "
          f"{args.steps} measured steps after {args.warmup} warm-up, median of {args.repeats} alternating rounds; "
          f"{platform.machine()}, {os.cpu_count()} cores, torch {__import__('torch').__version__}; "
          f"1-min load average {min(loads):.1f}-{max(loads):.1f} at the rounds' starts")
    print("| variant | audio-s/s (median) | all rounds | ms/step | peak RSS (MiB) | RSS after imports (MiB) | first run incl. warm-up (s) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for variant, rows in runs.items():
        r = sorted(rows, key=lambda row: row["audio_s_per_s"])[len(rows) // 2]
        name = "compiled blocks" if variant == "compiled" else "eager"
        every = ", ".join(f"{row['audio_s_per_s']:.2f}" for row in rows)
        print(f"| {name} | {r['audio_s_per_s']:.2f} | {every} | {r['step_ms']:.0f} | "
              f"{statistics.median(row['peak_rss_mib'] for row in rows):.0f} | {r['rss_before_training_mib']:.0f} | "
              f"{rows[0]['total_s']:.0f} |")


if __name__ == "__main__":
    main()
