"""The latent data layer's speed, for BENCHMARKS.md ("Latent data", issue 24).

    python tools/latent_data_bench.py --clips 1000 --seconds 5 --batch-size 16 --threads 2

In one run, on one folder of `--clips` generated clips of `--seconds` s (mono 16-bit WAV,
noise plus tones, in a temporary folder), with the demo-size model (`lyra init-checkpoint
--small`, random weights: speed only):

1. pre-encoding throughput: `lyra encode DIR OUT --manifest M` at batch 1, then with
   `--batch-size N` (the installed CLI in a subprocess; wall time of
   the whole command, start-up included, and the job's own x real-time figure);
2. `LatentDataset` start-up on a manifest of `--manifest-lines` lines (the clips' lines
   repeated): the time to construct it (only the manifest is read);
3. crops per second through a `torch.utils.data.DataLoader` over that manifest (batch 32,
   `--crop-frames` frames, normalised, shuffled) from 1 and from 2 worker processes, after
   one warm-up batch.

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def lyra_cli() -> str:
    beside = Path(sys.executable).with_name("lyra")
    return str(beside) if beside.exists() else "lyra"


def make_clips(folder: Path, clips: int, seconds: float, rate: int = 44100) -> None:
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    for i in range(clips):
        tone = 0.2 * np.sin(2 * np.pi * rng.uniform(80, 2000) * t)
        sf.write(folder / f"clip{i:05d}.wav", (tone + 0.05 * rng.standard_normal(n)).astype(np.float32), rate, subtype="PCM_16")


def encode(work: Path, name: str, checkpoint: Path, threads: int, batch: int) -> dict:
    args = [lyra_cli(), "encode", "clips", name, "-c", str(checkpoint), "--manifest", f"{name}.jsonl",
            "--threads", str(threads), "--batch-size", str(batch)]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    realtime = re.search(r"([\d.]+)x real-time", done.stderr)
    return {"batch": batch, "wall_s": wall, "job_realtime": float(realtime[1]) if realtime else None}


def crops_per_second(manifest: Path, frames: int, workers: int, batches: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    from lyra.data import LatentDataset

    data = LatentDataset(manifest, frames, normalize=True, seed=0)
    loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0), persistent_workers=workers > 0)
    it = iter(loader)
    next(it)                                   # workers started, first batch
    started, count = time.perf_counter(), 0
    for _ in range(batches):
        count += next(it)["latents"].shape[0]
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--manifest-lines", type=int, default=50000)
    parser.add_argument("--crop-frames", type=int, default=64)
    parser.add_argument("--loader-batches", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the results here")
    opts = parser.parse_args()
    say = lambda text: print(text, file=sys.stderr, flush=True)   # noqa: E731 - progress as it goes

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "clips").mkdir()
        make_clips(work / "clips", opts.clips, opts.seconds)
        checkpoint = work / "small.pt"
        subprocess.run([lyra_cli(), "init-checkpoint", str(checkpoint), "--small", "--seed", "0"], check=True,
                       capture_output=True)
        runs = []
        for name, batch in (("b1", 1), ("bn", opts.batch_size)):
            runs.append(encode(work, name, checkpoint, opts.threads, batch))
            say(f"encoded at batch {batch}: {runs[-1]}")
        audio = opts.clips * opts.seconds

        lines = (work / "bn.jsonl").read_text().splitlines()
        big = work / "big.jsonl"
        big.write_text("\n".join(lines[i % len(lines)] for i in range(opts.manifest_lines)) + "\n")
        (work / "big.stats.json").write_bytes((work / "bn.stats.json").read_bytes())
        from lyra.data import LatentDataset

        started = time.perf_counter()
        LatentDataset(big, opts.crop_frames, normalize=True)
        startup = time.perf_counter() - started
        rates = {w: crops_per_second(big, opts.crop_frames, w, opts.loader_batches) for w in (1, 2)}

    results = {"clips": opts.clips, "seconds": opts.seconds, "threads": opts.threads, "encode": runs,
               "dataset_startup_s": startup, "manifest_lines": opts.manifest_lines,
               "crops_per_s": rates, "crop_frames": opts.crop_frames}
    print(f"| pre-encoding {opts.clips} x {opts.seconds:g} s (demo model, {opts.threads} threads) | wall s | x real time (wall) | job's x real time |")
    print("|---|---|---|---|")
    for run in runs:
        print(f"| batch {run['batch']} | {run['wall_s']:.1f} | {audio / run['wall_s']:.1f} | {run['job_realtime']} |")
    print(f"\nLatentDataset start-up on {opts.manifest_lines} manifest lines: {startup:.3f} s")
    for w, rate in rates.items():
        print(f"| {w} worker(s) | {rate:.0f} crops/s ({opts.crop_frames} frames, batch 32, normalised) |")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
