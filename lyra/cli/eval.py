"""`lyra eval`: reconstruction metrics of audio against audio, printed as a table or JSON.

The comparing is `lyra.eval.compare`; this module parses the arguments and prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.cli.codec import (ChunkOpt, CompileOpt, DeviceOpt, EmaOpt, PrecisionOpt, StreamOpt, ThreadsOpt,
                            check_input, echo, load_codec)
from lyra.core.errors import LyraError


def evaluate(
    ref: Annotated[str, typer.Argument(metavar="REF", help="Reference audio file, or a folder of them.")],
    degraded: Annotated[Optional[str], typer.Argument(metavar="DEGRADED", help="Audio to compare with REF (a file, or a folder mirroring REF). Omit with --checkpoint.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Instead of DEGRADED: encode and decode REF with this model.")] = None,
    stream: StreamOpt = False,
    chunk_seconds: ChunkOpt = 10.0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    compile: CompileOpt = False,
    precision: PrecisionOpt = "fp32",
    ema: EmaOpt = True,
    dtype: Annotated[str, typer.Option("--dtype", help="With --checkpoint: latent storage to simulate (as in a .lyra file).")] = "float16",
    downmix: Annotated[bool, typer.Option("--downmix", help="Average a REF with more channels than DEGRADED (or than the model, with --checkpoint) into mono, as `lyra encode --downmix` does.")] = False,
    quantizers: Annotated[Optional[int], typer.Option("--quantizers", help="With --checkpoint of a model with a residual (rvq) bottleneck: measure at this many code rows only (default: at every count 1..Q, one table per bit rate).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (the table or JSON and errors are still printed).")] = False,
) -> None:
    """Print reconstruction metrics: SI-SDR (dB, higher is better), multi-resolution STFT
    distance and mel distance (lower is better), per file and averaged over a folder.

    Both signals are resampled to 44.1 kHz before measuring, so files at any sample rate
    give comparable numbers. In a folder, a pair that fails is reported and the others are
    still measured; the exit status is then 1. A model with a residual (rvq) bottleneck is
    measured at each bit rate it decodes: with its first 1, 2, ..., Q code rows.

    \b
    Examples:  lyra eval song.wav song.decoded.wav
               lyra eval music/ decoded/                (files matched by relative path, any audio suffix)
               lyra eval music/ -c model.pt --stream    (round trip through the model)
    """
    if (degraded is None) == (checkpoint is None):
        raise LyraError("eval: give either DEGRADED or --checkpoint (not both, not neither)")
    from lyra.audio.container import check_dtype
    from lyra.eval.compare import against, measure_all, references, through

    check_dtype(dtype)
    check_input(ref)
    if degraded is not None:
        check_input(degraded)
    if quantizers is not None and checkpoint is None:
        raise LyraError("--quantizers: only with --checkpoint (a model to encode and decode REF with)")
    pairs = references(ref)
    if degraded is not None:
        runs = [(None, against(ref, degraded, downmix))]
    else:
        codec = load_codec(checkpoint, device, threads, precision, compile, ema, chunk_seconds)
        counts = [codec.model.bottleneck.check_quantizers(quantizers)]
        if quantizers is None and codec.discrete and codec.model.bottleneck.residual:
            counts = list(range(1, codec.num_quantizers + 1))                 # every bit rate it decodes

        def measure(n: Optional[int]):
            return through(lambda x: codec.round_trip(x, dtype=dtype, stream=stream, chunk_seconds=chunk_seconds,
                                                      quantizers=n if codec.discrete else None),
                           codec.sample_rate, codec.channels, downmix)

        runs = [((n, codec.bitrate(n)) if codec.discrete else None, measure(n)) for n in counts]
    measured = [(rate, measure_all(pairs, measure, quiet)) for rate, measure in runs]
    if as_json:
        out = [{"files": dict(r.rows), "mean": r.mean, "failed": r.failed,
                **({"quantizers": rate[0], "kbit_s": rate[1] / 1000} if rate else {})} for rate, r in measured]
        typer.echo(json.dumps(out[0] if len(out) == 1 and measured[0][0] is None else {"bitrates": out}, indent=2))
    else:
        for rate, results in measured:
            if rate is not None:
                typer.echo(f"{rate[0]} quantizer{'s' if rate[0] > 1 else ''}: {rate[1] / 1000:.2f} kbit/s")
            if results.rows:
                _print_table(results.rows, results.mean)
    failed = measured[-1][1].failed
    for message in failed.values():
        echo(f"lyra: error: {message}")
    if failed:
        raise LyraError(f"{len(failed)} of {len(pairs)} files failed; the others were measured")


def _print_table(rows: list[tuple[str, dict[str, float]]], mean: Optional[dict[str, float]]) -> None:
    rows = [(printable(name), r) for name, r in rows]
    width = max(12, *(len(name) for name, _ in rows))
    typer.echo(f"{'file':<{width}}  {'SI-SDR (dB)':>11}  {'STFT dist':>9}  {'mel dist':>8}")
    if len(rows) > 1 and mean is not None:
        rows = [*rows, (f"mean of {len(rows)}", mean)]
    for name, r in rows:
        typer.echo(f"{name:<{width}}  {r['si_sdr_db']:>11.2f}  {r['stft_distance']:>9.4f}  {r['mel_distance']:>8.4f}")


def printable(name: str) -> str:
    """A file name as any standard output can print it: the bytes of a name that is not
    UTF-8 (b"\\xff.wav", which Python holds as "\\udcff.wav") as escapes: ``\\xff.wav``."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
