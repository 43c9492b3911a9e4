"""Codec commands: `lyra encode`, `lyra decode`, `lyra info`, `lyra eval`.

Every IN/OUT may be ``-`` (stdin/stdout), so ``... | lyra encode --stream - - | lyra decode
--stream - out.wav`` is a pipeline; a folder as IN is processed file by file into a mirrored
folder OUT (`lyra encode` of a folder is a resumable dataset job, parallel under torchrun:
`lyra.preencode`). Messages go to stderr (stdout may be carrying data). Outputs are written
atomically: an error or Ctrl-C leaves nothing behind, and inputs are never modified.

The codec itself is `lyra.codec.Codec` (the library API); this module parses arguments, shows
progress (`lyra.progress`, on a terminal, unless --quiet) and prints the summaries.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Optional

import typer

from lyra.errors import LyraError, os_error_line

if TYPE_CHECKING:
    from lyra.codec import Codec

OneFile = Callable[[str, str, Optional[Callable[[float, Optional[float]], None]]], str]

DTYPE_CHOICES = ("float16", "bfloat16", "float32", "int8")
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="Model checkpoint (from `lyra init-checkpoint` or `lyra train`).")]
StreamOpt = Annotated[bool, typer.Option("--stream", help="Process in overlapping chunks: constant memory, starts output at once, the same result as without within float rounding.")]
ChunkOpt = Annotated[float, typer.Option("--chunk-seconds", help="Audio per chunk with --stream (plus the model's receptive field of context either side).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the model runs: auto (cuda if available), cpu, cuda, cuda:1, ...")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the model (default: torch's choice; use 1 per process when piping two lyra processes on few cores).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model first (a one-off cost of seconds to minutes; then faster, same output within float32 rounding).")]
EmaOpt = Annotated[bool, typer.Option("--ema/--no-ema", help="Use the checkpoint's EMA weights when it has them (training with [ema] saves them); --no-ema: the raw trained weights.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Compute in fp32, bf16 or fp16 (reduced precision is fast on GPUs and CPUs with AVX-512 BF16/AMX, slow elsewhere).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display and no per-file summary lines (errors and warnings are still printed).")]


# ---------------------------------------------------------------------------------------
# Shared plumbing
# ---------------------------------------------------------------------------------------
def _load(checkpoint: Path, device: str, threads: Optional[int] = None, precision: str = "fp32",
          compile: bool = False, ema: bool = True, chunk_seconds: Optional[float] = None) -> "Codec":
    """`Codec.load`, with --chunk-seconds checked before any work."""
    from lyra.codec import Codec

    codec = Codec.load(checkpoint, device=device, precision=precision, compile=compile, ema=ema, threads=threads)
    if chunk_seconds is not None:
        codec.chunk_frames(chunk_seconds)
    return codec


@contextlib.contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[float, Optional[float]], None]]:
    """A progress line for one file (`lyra.progress`: drawn only on a terminal), and the
    callback `Codec.encode_file`/`decode_file` feed it with: (seconds done, total or None)."""
    from lyra.progress import Progress

    with Progress(label, total=None, unit="s", quiet=quiet) as bar:
        yield lambda done, total: bar.update(completed=done, total=total)


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _same_file(a: str, b: str) -> bool:
    if "-" in (a, b):
        return False
    pa, pb = Path(a), Path(b)
    try:
        return pa.resolve() == pb.resolve() or (pb.exists() and pa.exists() and pa.samefile(pb))
    except OSError:
        return False


def _run_files(inp: str, out: str, suffixes: tuple[str, ...], out_suffix: str, label: str,
               one: OneFile, force: bool = False, quiet: bool = False) -> None:
    """One file, or every matching file of folder `inp` into the mirrored folder `out`.

    `one(src, dst, progress)` processes a file and returns a one-line summary, printed for a
    single file unless `quiet`; a single file gets a progress line fed through `progress`
    (None for the files of a folder, which get one progress line counting files). Failures in
    a folder are listed at the end. Existing outputs are refused before any work unless
    `force` (--force). (`lyra encode` of a folder is `lyra.preencode` instead: resumable, and
    parallel under torchrun.)
    """
    from lyra.atomic import refuse_to_replace

    src = Path(inp)
    if inp == "-" or not src.is_dir():
        if _same_file(inp, out):
            raise LyraError(f"{out}: is the input file; refusing to overwrite it")
        if not force:
            refuse_to_replace(out)
        with _progress(f"{label} {'<stdin>' if inp == '-' else Path(inp).name}", quiet) as report:
            summary = _guard_os(one, inp, out, report)
        if not quiet:
            _echo(summary)
        return
    from lyra.preencode import list_folder
    from lyra.progress import Progress

    dst = Path(out)
    files = list_folder(inp, out, suffixes, out_suffix)
    targets = {target: path for path, target in files}
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        more = f", as do {len(existing) - 1} more in {out}" if len(existing) > 1 else ""
        raise LyraError(f"{existing[0]}: already exists{more} (pass --force to overwrite)")
    failures: list[str] = []
    with Progress(label, total=len(targets), unit="files", quiet=quiet) as bar:
        for target, path in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                _guard_os(one, str(path), str(target), None)
            except LyraError as exc:
                failures.append(str(exc))
            bar.advance(1)
    for message in failures:
        _echo(f"lyra: error: {message}")
    if failures:
        raise LyraError(f"{len(failures)} of {len(files)} files failed; the others were written to {dst}")
    if not quiet:
        _echo(f"{len(files)} files written to {dst}")


def _guard_os(one: Callable[..., str], inp: str, out: str, *args: object) -> str:
    try:
        return one(inp, out, *args)
    except OSError as exc:   # disk full, permissions, ...: still one line naming the file
        raise LyraError(os_error_line(exc, out)) from None


# ---------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------
def encode(
    inp: Annotated[str, typer.Argument(metavar="IN", help="Audio file (WAV, FLAC, OGG, MP3; any rate and bit depth), a folder, or - for stdin.")],
    out: Annotated[str, typer.Argument(metavar="OUT", help="The .lyra file, a folder (when IN is one), or - for stdout.")],
    checkpoint: CheckpointOpt,
    stream: StreamOpt = False,
    chunk_seconds: ChunkOpt = 10.0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    compile: CompileOpt = False,
    precision: PrecisionOpt = "fp32",
    ema: EmaOpt = True,
    dtype: Annotated[str, typer.Option("--dtype", help="Latent storage: float16, bfloat16, float32, or int8 (per-frame scale).")] = "float16",
    downmix: Annotated[bool, typer.Option("--downmix", help="Average inputs with more channels than the model into mono (then duplicated).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists; with a folder IN, encode every file again (without it, complete outputs of the same model are skipped).")] = False,
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="With a folder IN: also write this JSON Lines index, one line per complete output (source, duration_s, num_samples, sample_rate, frames, output), sorted by source.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Encode audio into a compact .lyra latent file (the posterior mean: deterministic).

    Audio is resampled to the model's rate and mono is duplicated to the model's channels.
    Without --stream the whole file is processed at once (memory grows with its length);
    with --stream it goes through in overlapping chunks with the same result (within float
    rounding). On a terminal a progress line shows how far it is.

    A folder IN is a dataset job: every audio file in it is encoded into the mirrored
    folder OUT. A rerun skips the outputs that are complete (same model and --dtype, every
    CRC checked) and encodes the missing, truncated or corrupted ones; an output it cannot
    resume (another model's, or not a .lyra file) is refused unless --force. Under torchrun
    the files are shared among the processes (one GPU each), with the same outputs.

    \b
    Examples:  lyra encode song.wav song.lyra -c model.pt
               lyra encode music/ latents/ -c model.pt --stream
               torchrun --nproc_per_node=8 -m lyra encode music/ latents/ -c model.pt --manifest latents.jsonl
               ffmpeg -i in.m4a -f wav - | lyra encode --stream - out.lyra -c model.pt
    """
    if dtype not in DTYPE_CHOICES:
        raise LyraError(f"--dtype: expected one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    _check_input(inp)
    if inp != "-" and Path(inp).is_dir():
        _encode_folder(inp, out, checkpoint, stream, chunk_seconds, device, threads, compile, precision,
                       dtype, downmix, force, manifest, ema)
        return
    if manifest is not None:
        raise LyraError("--manifest: only with a folder IN (a data set to pre-encode)")
    from lyra.train.distributed import launched_by_torchrun

    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        raise LyraError(f"{inp}: not a folder; under torchrun, `lyra encode` shares a folder's files "
                        "among the processes (run one process for one file)")
    codec = _load(checkpoint, device, threads, precision, compile, ema, chunk_seconds)
    from lyra.audio import AUDIO_SUFFIXES

    def one(src: str, dst: str, progress) -> str:
        done = codec.encode_file(src, dst, stream=stream, chunk_seconds=chunk_seconds, dtype=dtype,
                                 downmix=downmix, progress=progress)
        if done.truncation:
            _echo(done.truncation)                   # the header promised more than the file holds
        return f"{done.name}: {done.frames} frames, {done.seconds:.3f} s, {done.bitrate / 1000:.2f} kbit/s ({dtype})"

    _run_files(inp, out, AUDIO_SUFFIXES, ".lyra", "encoding", one, force=force, quiet=quiet)


def _encode_folder(inp: str, out: str, checkpoint: Path, stream: bool, chunk_seconds: float, device: str,
                   threads: Optional[int], compile: bool, precision: str, dtype: str, downmix: bool,
                   force: bool, manifest: Optional[str], ema: bool = True) -> None:
    """`lyra encode DIR OUT_DIR`: the job is `lyra.preencode.run`; here, how to load and encode."""
    from lyra.audio import AUDIO_SUFFIXES
    from lyra.preencode import Job, run

    def load(dev: str) -> "Codec":      # on this process's device (cuda:LOCAL_RANK under torchrun)
        return _load(checkpoint, dev, threads, precision, compile, ema, chunk_seconds)

    def encode_file(codec: "Codec", src: str, dst: str):
        done = codec.encode_file(src, dst, stream=stream, chunk_seconds=chunk_seconds, dtype=dtype, downmix=downmix)
        if done.truncation:
            _echo(done.truncation)
        return done.trailer, done.header

    run(Job(inp, out, load, encode_file, AUDIO_SUFFIXES, device=device, dtype=dtype, force=force, manifest=manifest))


def _check_input(inp: str) -> None:
    if inp != "-" and not Path(inp).exists():
        raise LyraError(f"{inp}: no such file or folder")


# ---------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------
def decode(
    inp: Annotated[str, typer.Argument(metavar="IN", help="A .lyra file, a folder of them, or - for stdin.")],
    out: Annotated[str, typer.Argument(metavar="OUT", help="A .wav/.flac file, a folder (when IN is one), or - for stdout.")],
    checkpoint: CheckpointOpt,
    stream: StreamOpt = False,
    chunk_seconds: ChunkOpt = 10.0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    compile: CompileOpt = False,
    precision: PrecisionOpt = "fp32",
    ema: EmaOpt = True,
    original_rate: Annotated[bool, typer.Option("--original-rate", help="Resample to the source file's rate (stored in the .lyra) instead of the model's.")] = False,
    original_channels: Annotated[bool, typer.Option("--original-channels", help="Give back the source file's channel count (stored in the .lyra): a mono source decodes to mono (the mean of the model's channels) instead of duplicated channels.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="wav or flac (default: from OUT's suffix; wav for - and folders).")] = None,
    subtype: Annotated[str, typer.Option("--subtype", help="Sample format: PCM_16 or PCM_24 (WAV or FLAC), FLOAT (WAV). PCM clips to [-1, 1].")] = "PCM_16",
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT (or files in the OUT folder) if it exists.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Decode a .lyra latent file back to audio (WAV or FLAC).

    The checkpoint must be the model that encoded the file (its fingerprint is in the
    header). With --stream the latents are decoded in overlapping chunks as they arrive.
    Audio comes back at the model's rate and channels; --original-rate and
    --original-channels give the source file's rate and channel count instead (both: the
    source's format, e.g. mono 48 kHz).

    \b
    Examples:  lyra decode song.lyra song.wav -c model.pt
               lyra decode song.lyra song.flac -c model.pt --original-rate --original-channels
               lyra encode --stream - - -c model.pt < in.wav | lyra decode --stream - out.wav -c model.pt
    """
    _check_input(inp)
    codec = _load(checkpoint, device, threads, precision, compile, ema, chunk_seconds)
    suffix = "." + (fmt or "wav").lower()

    def one(src: str, dst: str, progress) -> str:
        done = codec.decode_file(src, dst, stream=stream, chunk_seconds=chunk_seconds, original_rate=original_rate,
                                 original_channels=original_channels, format=fmt, subtype=subtype, progress=progress)
        if done.clipped:
            _echo(f"{done.name}: warning: {done.clipped} samples outside [-1, 1] were clipped (use --subtype FLOAT to keep them)")
        return f"{done.name}: {done.seconds:.3f} s at {done.sample_rate} Hz"

    _run_files(inp, out, (".lyra",), suffix, "decoding", one, force=force, quiet=quiet)


# ---------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------
def info(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A .lyra file, or - for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Show a .lyra file's header, duration, bitrate and model fingerprint (and verify every chunk).

    \b
    Example:  lyra info song.lyra
    """
    from lyra.container import DTYPES, open_lyra
    from lyra.durations import format_duration

    _check_input(file)
    with open_lyra(file) as reader:
        reader.read_all()            # checks every chunk's CRC and the end marker
        h, t = reader.header, reader.trailer
        size = reader.bytes_read
    seconds = t.num_samples / h.sample_rate
    facts = {
        "file": "<stdin>" if file == "-" else file, "format_version": reader.version, "model_fingerprint": h.model_fingerprint,
        "sample_rate": h.sample_rate, "channels": h.channels, "hop_length": h.hop_length,
        "latent_dim": h.latent_dim, "dtype": h.dtype, "frames": t.num_frames,
        "frame_rate": h.frame_rate, "num_samples": t.num_samples, "duration_s": seconds,
        "source_sample_rate": h.source_sample_rate, "source_channels": h.source_channels,
        "source_num_samples": t.source_num_samples, "bytes": size,
        "latent_kbps": h.bitrate / 1000, "file_kbps": size * 8 / seconds / 1000, "chunks": reader.chunks,
    }
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    extra = " + a float32 scale per frame" if h.dtype == "int8" else ""
    lines = [
        ("file", f"{facts['file']} (.lyra format version {reader.version}, {size:,} bytes, {reader.chunks} chunks, all CRC32 {'checks pass; chunk order not recorded' if reader.version == 1 else 'and chunk-order checks pass'})"),
        ("model", f"fingerprint {h.model_fingerprint}"),
        ("audio", f"{h.sample_rate} Hz, {h.channels} channels"),
        ("latent", f"{h.latent_dim} channels x {t.num_frames} frames at {h.frame_rate:.2f} Hz (hop {h.hop_length})"),
        ("storage", f"{h.dtype} ({DTYPES[h.dtype]} bits per value{extra})"),
        ("duration", f"{format_duration(seconds, millis=True)} ({t.num_samples:,} samples)"),
        ("source", f"{h.source_sample_rate} Hz, {h.source_channels} channels, {t.source_num_samples:,} samples"),
        ("bitrate", f"{h.bitrate / 1000:.2f} kbit/s latent payload; {facts['file_kbps']:.2f} kbit/s file"),
    ]
    for key, value in lines:
        typer.echo(f"{key + ':':<10}{value}")


# ---------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------
METRICS = ("si_sdr_db", "stft_distance", "mel_distance")


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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (the table or JSON and errors are still printed).")] = False,
) -> None:
    """Print reconstruction metrics: SI-SDR (dB, higher is better), multi-resolution STFT
    distance and mel distance (lower is better), per file and averaged over a folder.

    Both signals are resampled to 44.1 kHz before measuring, so files at any sample rate
    give comparable numbers. In a folder, a pair that fails is reported and the others are
    still measured; the exit status is then 1.

    \b
    Examples:  lyra eval song.wav song.decoded.wav
               lyra eval music/ decoded/                (files matched by relative path, any audio suffix)
               lyra eval music/ -c model.pt --stream    (round trip through the model)
    """
    if (degraded is None) == (checkpoint is None):
        raise LyraError("eval: give either DEGRADED or --checkpoint (not both, not neither)")
    if dtype not in DTYPE_CHOICES:
        raise LyraError(f"--dtype: expected one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    from lyra.audio import AUDIO_SUFFIXES

    _check_input(ref)
    if degraded is not None:
        _check_input(degraded)
    ref_path = Path(ref)
    if ref_path.is_dir():
        pairs = [(p, str(p.relative_to(ref_path))) for p in sorted(ref_path.rglob("*"))
                 if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
        if not pairs:
            raise LyraError(f"{ref}: no audio files in this folder")
    else:
        pairs = [(ref_path, ref)]
    if degraded is not None:
        if ref_path.is_dir() != Path(degraded).is_dir():
            raise LyraError(f"{degraded}: REF and DEGRADED must both be files or both be folders")

        def measure(path: Path, rel: str) -> dict[str, float]:
            other = _match(Path(degraded), rel) if ref_path.is_dir() else Path(degraded)
            return _compare_files(path, other, downmix=downmix)
    else:
        codec = _load(checkpoint, device, threads, precision, compile, ema, chunk_seconds)

        def measure(path: Path, rel: str) -> dict[str, float]:
            from lyra.audio import load_audio

            x, _ = load_audio(path, codec.sample_rate, codec.channels, downmix)          # [C, T]
            y = codec.round_trip(x, dtype=dtype, stream=stream, chunk_seconds=chunk_seconds)   # [C, T]
            return _metrics(x, y, codec.sample_rate)

    if len(pairs) == 1:
        rows, failed = [(pairs[0][1], measure(*pairs[0]))], {}
    else:
        rows, failed = _measure_all(pairs, measure, quiet)
    mean = {k: sum(r[k] for _, r in rows) / len(rows) for k in METRICS} if rows else None
    if as_json:
        typer.echo(json.dumps({"files": {name: r for name, r in rows}, "mean": mean, "failed": failed}, indent=2))
    elif rows:
        _print_table(rows, mean)
    for message in failed.values():
        _echo(f"lyra: error: {message}")
    if failed:
        raise LyraError(f"{len(failed)} of {len(pairs)} files failed; the others were measured")


def _measure_all(pairs: list[tuple[Path, str]], measure: Callable[[Path, str], dict[str, float]],
                 quiet: bool = False) -> tuple[list[tuple[str, dict[str, float]]], dict[str, str]]:
    """Every pair measured, with a progress line: (rows, {name: error} for the pairs that failed)."""
    from lyra.progress import Progress

    rows: list[tuple[str, dict[str, float]]] = []
    failed: dict[str, str] = {}
    with Progress("evaluating", total=len(pairs), unit="files", quiet=quiet) as bar:
        for path, rel in pairs:
            try:
                rows.append((rel, measure(path, rel)))
            except LyraError as exc:
                failed[rel] = str(exc)
            except OSError as exc:   # still one line naming the file
                failed[rel] = os_error_line(exc, path)
            bar.advance(1)
    return rows, failed


def _print_table(rows: list[tuple[str, dict[str, float]]], mean: dict[str, float]) -> None:
    width = max(12, *(len(name) for name, _ in rows))
    typer.echo(f"{'file':<{width}}  {'SI-SDR (dB)':>11}  {'STFT dist':>9}  {'mel dist':>8}")
    if len(rows) > 1:
        rows = [*rows, (f"mean of {len(rows)}", mean)]
    for name, r in rows:
        typer.echo(f"{name:<{width}}  {r['si_sdr_db']:>11.2f}  {r['stft_distance']:>9.4f}  {r['mel_distance']:>8.4f}")


def _match(folder: Path, rel: str) -> Path:
    from lyra.audio import AUDIO_SUFFIXES

    stem = folder / Path(rel).with_suffix("")
    for suffix in (Path(rel).suffix, *AUDIO_SUFFIXES):
        candidate = stem.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise LyraError(f"{folder}: no file matching {rel} (looked for {stem}.*)")


def _metrics(ref, est, sample_rate: int) -> dict[str, float]:
    import torch

    from lyra.metrics import METRIC_RATE, at_metric_rate, mel_distance, si_sdr, stft_distance

    ref, est = at_metric_rate(ref, sample_rate), at_metric_rate(est, sample_rate)   # any rate works
    with torch.no_grad():
        return {"si_sdr_db": float(si_sdr(ref, est)), "stft_distance": float(stft_distance(ref, est)),
                "mel_distance": float(mel_distance(ref, est, sample_rate=METRIC_RATE))}


def _compare_files(ref_path: Path, est_path: Path, downmix: bool = False) -> dict[str, float]:
    from lyra.audio import expand_channels, mix_channels, open_audio, resample

    with open_audio(ref_path) as src:
        ref, rate = src.read_all(), src.sample_rate                       # [C, T]
    with open_audio(est_path) as src:
        est, est_rate = src.read_all(), src.sample_rate                   # [C', T']
    est = resample(est, est_rate, rate)
    ref = mix_channels(ref, est.shape[0], downmix)                        # [C, T] -> [1, T] if asked
    if est.shape[0] != ref.shape[0]:
        if 1 not in (est.shape[0], ref.shape[0]):
            hint = "; pass --downmix to compare with REF mixed down" if ref.shape[0] > est.shape[0] else ""
            raise LyraError(f"{est_path}: has {est.shape[0]} channels, {ref_path} has {ref.shape[0]}{hint}")
        channels = max(est.shape[0], ref.shape[0])
        ref, est = expand_channels(ref, channels), expand_channels(est, channels)
    if abs(est.shape[-1] - ref.shape[-1]) > 2:   # resampling may round a length by a sample
        raise LyraError(f"{est_path}: {est.shape[-1]} samples at {rate} Hz, but {ref_path} has {ref.shape[-1]}")
    n = min(est.shape[-1], ref.shape[-1])
    return _metrics(ref[..., :n], est[..., :n], rate)


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
    app.command("decode")(decode)
    app.command("info")(info)
    app.command("eval")(evaluate)
