"""Codec speed and streaming memory, for BENCHMARKS.md ("Streaming codec").

    python tools/codec_bench.py speed  --model small   --seconds 60
    python tools/codec_bench.py speed  --model default --seconds 20
    python tools/codec_bench.py memory --model small   --minutes 1 60
    python tools/codec_bench.py memory --model small   --minutes 1 5 --offline
    (add --threads 1 on a machine whose cores are shared with other work)

`speed` times encode and decode in this process (model compute only, random weights, a
generated stereo signal): offline (the whole signal at once) and streamed (`encode_stream` /
`decode_stream` with --chunk-seconds chunks), as x realtime (audio seconds per wall second).

`memory` runs the real CLI in a subprocess per case and reads its peak resident memory from
the kernel (`os.wait4` rusage, ru_maxrss; VmHWM is polled to tell when the peak was reached): `lyra encode --stream - out.lyra` fed a generated
WAV through a pipe (nothing the size of the input is ever stored), then `lyra decode --stream
out.lyra -` with stdout to /dev/null. `--offline` drops --stream (encode then reads a file).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 44100
LYRA = [sys.executable, "-m", "lyra"]


def signal_blocks(seconds: float, block: int = 1 << 16, seed: int = 0):
    """A stereo test signal (two tones plus noise, peak below 1) as [n, 2] float32 blocks."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SAMPLE_RATE)
    for start in range(0, total, block):
        t = (np.arange(start, min(total, start + block)) / SAMPLE_RATE)[:, None]
        tones = 0.4 * np.sin(2 * np.pi * np.array([220.0, 331.0]) * t)
        yield (tones + 0.05 * rng.standard_normal(tones.shape)).astype(np.float32)


def wav_header(frames: int, channels: int = 2) -> bytes:
    size = frames * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, SAMPLE_RATE, SAMPLE_RATE * channels * 2, channels * 2, 16)
            + b"data" + struct.pack("<I", size))


def build(model: str):
    import torch

    import lyra

    torch.manual_seed(0)
    cfg = lyra.ModelConfig.small() if model == "small" else lyra.ModelConfig()
    return lyra.build_model(cfg).eval()


def speed(args: argparse.Namespace) -> None:
    import torch

    from lyra.streaming import decode_stream, encode_stream

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args.model)
    x = torch.from_numpy(np.concatenate(list(signal_blocks(args.seconds)))).T.contiguous()   # [2, T]
    frames = max(1, round(args.chunk_seconds * SAMPLE_RATE / model.hop_length))
    rows = []
    with torch.inference_mode():   # warm up (oneDNN picks its kernels on first use)
        model.decode(model.encode(x[None, :, :model.hop_length * 4])[0])

    def best(fn):                  # the fastest of --repeat runs: the least disturbed by other load
        times, out = [], None
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out

    with torch.inference_mode():
        enc_off, z = best(lambda: model.encode(x[None])[0])
        dec_off, y = best(lambda: model.decode(z, x.shape[-1]))
    enc_st, zs = best(lambda: torch.cat(list(encode_stream(model, x.split(1 << 16, dim=-1), frames)), dim=-1))
    dec_st, ys = best(lambda: torch.cat(list(decode_stream(model, zs.split(64, dim=-1), frames, x.shape[-1])), dim=-1))
    diff_z = (zs - z[0]).abs().max().item()
    diff_y = (ys - y[0]).abs().max().item()
    n = sum(p.numel() for p in model.parameters())
    rows.append((args.model, f"{n:,}", args.seconds, args.seconds / enc_off, args.seconds / enc_st,
                 args.seconds / dec_off, args.seconds / dec_st, diff_z, diff_y))
    print(f"| model | parameters | audio (s) | encode offline | encode streamed | decode offline | decode streamed "
          f"| max diff latents | max diff audio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:g} | {r[3]:.2f}x | {r[4]:.2f}x | {r[5]:.2f}x | {r[6]:.2f}x | {r[7]:.1e} | {r[8]:.1e} |")
    print(f"(streamed: --chunk-seconds {args.chunk_seconds}; torch threads {torch.get_num_threads()}; "
          f"best of {args.repeat})")


def run_measured(cmd: list[str], stdin_blocks=None, header: bytes = b"", stdout=subprocess.DEVNULL) -> tuple[float, float, float]:
    """Run `cmd`, optionally piping a WAV into it.

    Returns (peak RSS in MiB from the kernel's rusage, wall seconds, seconds into the run at
    which the peak was last raised, from polling /proc/PID/status VmHWM twice a second).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_blocks is not None else subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.PIPE)
    last_raise = [0.0]
    done = threading.Event()

    def watch() -> None:
        peak = 0
        while not done.wait(0.5):
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                return
            hwm = int(status.split("VmHWM:")[1].split()[0]) if "VmHWM:" in status else 0
            if hwm > peak:
                peak, last_raise[0] = hwm, time.perf_counter() - start

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    if stdin_blocks is not None:
        try:
            proc.stdin.write(header)
            for block in stdin_blocks:
                proc.stdin.write((np.clip(block, -1, 1) * 32767).astype("<i2").tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()}")
    return usage.ru_maxrss / 1024, wall, last_raise[0]


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="lyra-bench-") as tmp:
        ckpt = Path(tmp) / f"{args.model}.pt"
        subprocess.run([*LYRA, "init-checkpoint", str(ckpt), *(["--small"] if args.model == "small" else [])],
                       check=True, capture_output=True)
        stream = [] if args.offline else ["--stream", "--chunk-seconds", str(args.chunk_seconds)]
        stream += ["--threads", str(args.threads)] if args.threads else []
        mode = "offline" if args.offline else f"--stream, {args.chunk_seconds:g} s chunks"
        print("| model | input | mode | encode peak RSS (reached at) | encode x realtime "
              "| decode peak RSS (reached at) | decode x realtime |")
        print("|---|---|---|---|---|---|---|")
        for minutes in args.minutes:
            seconds = minutes * 60
            frames = int(seconds * SAMPLE_RATE)
            lyra_file = Path(tmp) / "x.lyra"
            if args.offline:   # offline encode reads a file (a pipe is spooled anyway)
                wav = Path(tmp) / "x.wav"
                with wav.open("wb") as f:
                    f.write(wav_header(frames))
                    for block in signal_blocks(seconds):
                        f.write((np.clip(block, -1, 1) * 32767).astype("<i2").tobytes())
                enc = run_measured([*LYRA, "encode", str(wav), str(lyra_file), "-c", str(ckpt), "--device", "cpu"])
                wav.unlink()
            else:
                enc = run_measured([*LYRA, "encode", "-", str(lyra_file), "-c", str(ckpt), "--device", "cpu", *stream],
                                   signal_blocks(seconds), wav_header(frames))
            dec = run_measured([*LYRA, "decode", str(lyra_file), "-", "-c", str(ckpt), "--device", "cpu", *stream])
            print(f"| {args.model} | {minutes:g} min | {mode} | {enc[0]:,.0f} MiB ({enc[2]:.0f} s of {enc[1]:.0f} s) "
                  f"| {seconds / enc[1]:.2f}x | {dec[0]:,.0f} MiB ({dec[2]:.0f} s of {dec[1]:.0f} s) "
                  f"| {seconds / dec[1]:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed", help="encode/decode x realtime, offline and streamed (in process)")
    p.add_argument("--model", choices=("small", "default"), default="small")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--chunk-seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeat", type=int, default=1, help="time each case this many times and keep the fastest")
    p.set_defaults(fn=speed)
    p = sub.add_parser("memory", help="peak RSS of `lyra encode/decode --stream` subprocesses")
    p.add_argument("--model", choices=("small", "default"), default="small")
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0])
    p.add_argument("--chunk-seconds", type=float, default=10.0)
    p.add_argument("--offline", action="store_true", help="without --stream, for comparison")
    p.add_argument("--threads", type=int, default=None, help="passed to lyra as --threads")
    p.set_defaults(fn=memory)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
