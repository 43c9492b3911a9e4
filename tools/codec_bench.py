"""Codec speed and streaming memory, for BENCHMARKS.md ("Streaming codec").

    python tools/codec_bench.py speed  --model small   --seconds 60
    python tools/codec_bench.py speed  --model default --seconds 20
    python tools/codec_bench.py memory --model small   --minutes 1 60
    python tools/codec_bench.py memory --model small   --minutes 1 5 --offline
    python tools/codec_bench.py memory --model small   --minutes 1 10 --compile
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

    from lyra.codec.streaming import decode_stream, encode_stream

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args.model)
    x = torch.from_numpy(np.concatenate(list(signal_blocks(args.seconds)))).T.contiguous()   # [2, T]
    frames = max(1, round(args.chunk_seconds * SAMPLE_RATE / model.hop_length))
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
    s = args.seconds
    print("| model | parameters | audio (s) | encode offline | encode streamed | decode offline | decode streamed "
          "| max diff latents | max diff audio |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {n:,} | {s:g} | {s / enc_off:.2f}x | {s / enc_st:.2f}x | {s / dec_off:.2f}x "
          f"| {s / dec_st:.2f}x | {diff_z:.1e} | {diff_y:.1e} |")
    print(f"(streamed: --chunk-seconds {args.chunk_seconds}; torch threads {torch.get_num_threads()}; "
          f"best of {args.repeat})")


def run_measured(cmd: list[str], stdin_blocks=None, header: bytes = b"", stdout=subprocess.DEVNULL) -> dict:
    """Run `cmd`, optionally piping a WAV into it; measure its memory.

    Returns peak RSS (MiB, from the kernel's rusage at exit), wall seconds, and from polling
    /proc/PID/status twice a second: when the peak (VmHWM) was last raised, and the resident
    memory (VmRSS) at 1/4, 1/2 and 3/4 of the run.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_blocks is not None else subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.PIPE)
    samples: list[tuple[float, int, int]] = []     # (seconds, VmRSS KiB, VmHWM KiB)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                return
            if "VmHWM:" in status:
                field = lambda key: int(status.split(key)[1].split()[0])   # noqa: E731
                samples.append((time.perf_counter() - start, field("VmRSS:"), field("VmHWM:")))

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
    peak_at = next((t for t, _, hwm in samples if hwm == samples[-1][2]), 0.0) if samples else 0.0

    def rss_at(fraction: float) -> float:
        return min(samples, key=lambda s: abs(s[0] - fraction * wall))[1] / 1024 if samples else float("nan")

    return {"peak": usage.ru_maxrss / 1024, "wall": wall, "peak_at": peak_at,
            "rss": [rss_at(f) for f in (0.25, 0.5, 0.75)]}


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="lyra-bench-") as tmp:
        ckpt = Path(tmp) / f"{args.model}.pt"
        subprocess.run([*LYRA, "init-checkpoint", str(ckpt), *(["--small"] if args.model == "small" else [])],
                       check=True, capture_output=True)
        stream = [] if args.offline else ["--stream", "--chunk-seconds", str(args.chunk_seconds)]
        stream += ["--threads", str(args.threads)] if args.threads else []
        stream += ["--compile"] if args.compile else []
        mode = ("offline" if args.offline else f"--stream, {args.chunk_seconds:g} s chunks") + (", --compile" if args.compile else "")
        print("| model | input | mode | encode peak RSS (reached at) | encode RSS at 1/4, 1/2, 3/4 | encode x realtime "
              "| decode peak RSS (reached at) | decode RSS at 1/4, 1/2, 3/4 | decode x realtime |")
        print("|---|---|---|---|---|---|---|---|---|")
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
                enc = run_measured([*LYRA, "encode", str(wav), str(lyra_file), "-c", str(ckpt), "--device", "cpu", "--force"])
                wav.unlink()
            else:
                enc = run_measured([*LYRA, "encode", "-", str(lyra_file), "-c", str(ckpt), "--device", "cpu", "--force", *stream],
                                   signal_blocks(seconds), wav_header(frames))
            dec = run_measured([*LYRA, "decode", str(lyra_file), "-", "-c", str(ckpt), "--device", "cpu", *stream])
            cells = [f"{m['peak']:,.0f} MiB ({m['peak_at']:.0f} s of {m['wall']:.0f} s) "
                     f"| {' / '.join(f'{r:,.0f}' for r in m['rss'])} MiB | {seconds / m['wall']:.2f}x" for m in (enc, dec)]
            print(f"| {args.model} | {minutes:g} min | {mode} | {cells[0]} | {cells[1]} |", flush=True)


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
    p.add_argument("--compile", action="store_true", help="passed to lyra: the compiled codec")
    p.set_defaults(fn=memory)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
