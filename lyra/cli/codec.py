"""Codec commands: `lyra encode`, `lyra decode`, `lyra info` (`lyra eval`: `lyra.cli.eval`).

Every IN/OUT may be ``-`` (stdin/stdout), so ``... | lyra encode --stream - - | lyra decode
--stream - out.wav`` is a pipeline; a folder as IN is processed file by file into a mirrored
folder OUT (`lyra encode` of a folder is a resumable dataset job, parallel under torchrun:
`lyra.codec.preencode`). Messages go to stderr (stdout may be carrying data). Outputs are written
atomically: an error or Ctrl-C leaves nothing behind, and inputs are never modified.

The codec itself is `lyra.codec.codec.Codec` (the library API); this module parses arguments, shows
progress (`lyra.core.progress`, on a terminal, unless --quiet) and prints the summaries.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Optional

import typer

from lyra.core.errors import LyraError, os_error_line

if TYPE_CHECKING:
    from lyra.codec.codec import Codec

OnProgress = Callable[[float, Optional[float]], None]   # `lyra.codec.files.ProgressCallback`
OneFile = Callable[[str, str, Optional[OnProgress]], str]

CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="Model checkpoint (from `lyra init-checkpoint` or `lyra train`).")]
StreamOpt = Annotated[bool, typer.Option("--stream", help="Process in overlapping chunks: constant memory, starts output at once, the same result as without within float rounding.")]
ChunkOpt = Annotated[float, typer.Option("--chunk-seconds", help="Audio per chunk with --stream (plus the model's receptive field of context either side).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the model runs: auto (cuda if available), cpu, cuda, cuda:1, ...")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the model (default: torch's choice; use 1 per process when piping two lyra processes on few cores).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model first (a one-off cost of seconds to minutes; then faster, same output within float32 rounding).")]
EmaOpt = Annotated[bool, typer.Option("--ema/--no-ema", help="Use the checkpoint's EMA weights when it has them (training with [ema] saves them); --no-ema: the raw trained weights.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Compute in fp32, bf16 or fp16 (reduced precision is fast on GPUs and CPUs with AVX-512 BF16/AMX, slow elsewhere).")]
QuantizersOpt = Annotated[Optional[int], typer.Option("--quantizers", help="A model with a residual (rvq) bottleneck: store only the first N code rows per frame, a lower bit rate (default: all it was trained with).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display and no per-file summary lines (errors and warnings are still printed).")]


# ---------------------------------------------------------------------------------------
# Shared plumbing
# ---------------------------------------------------------------------------------------
def load_codec(checkpoint: Path, device: str, threads: Optional[int] = None, precision: str = "fp32",
               compile: bool = False, ema: bool = True, chunk_seconds: Optional[float] = None) -> "Codec":
    """`Codec.load`, with --chunk-seconds checked before any work."""
    from lyra.codec.codec import Codec

    codec = Codec.load(checkpoint, device=device, precision=precision, compile=compile, ema=ema, threads=threads)
    if chunk_seconds is not None:
        codec.chunk_frames(chunk_seconds)
    return codec


@contextlib.contextmanager
def _progress(label: str, quiet: bool) -> Iterator[OnProgress]:
    """A progress line for one file (`lyra.core.progress`: drawn only on a terminal), and the
    callback `Codec.encode_file`/`decode_file` feed it with: (seconds done, total or None)."""
    from lyra.core.progress import Progress

    with Progress(label, total=None, unit="s", quiet=quiet) as bar:
        yield lambda done, total: bar.update(completed=done, total=total)


def echo(message: str) -> None:
    """A message line, on standard error (standard output may be carrying data)."""
    typer.echo(message, err=True)


def check_input(inp: str) -> None:
    if inp != "-" and not Path(inp).exists():
        raise LyraError(f"{inp}: no such file or folder")


class _Report:
    """`lyra.codec.preencode.Report` on standard error: lines, and a progress line on a terminal."""

    def __init__(self, quiet: bool) -> None:
        from lyra.core.progress import draws

        self.draws = draws(quiet)

    def line(self, text: str) -> None:
        echo(text)

    @contextlib.contextmanager
    def progress(self, files: int, seconds: float) -> Iterator[Callable[[int, float], None]]:
        from lyra.core.progress import Progress

        # (the line before says how many files and processes)
        with Progress("encoding", total=seconds or None, unit="s", quiet=not self.draws) as bar:
            yield lambda done, audio: bar.update(completed=audio, files=f"{done}/{files} files")


def _run_files(inp: str, out: str, suffixes: tuple[str, ...], out_suffix: str, label: str,
               one: OneFile, force: bool = False, quiet: bool = False) -> None:
    """One file, or every matching file of folder `inp` into the mirrored folder `out`.

    `one(src, dst, progress)` processes a file and returns a one-line summary, printed for a
    single file unless `quiet`; a single file gets a progress line fed through `progress`
    (None for the files of a folder, which get one progress line counting files). Failures in
    a folder are listed at the end. Existing outputs are refused before any work unless
    `force` (--force). (`lyra encode` of a folder is `lyra.codec.preencode` instead: resumable, and
    parallel under torchrun.)
    """
    from lyra.codec.mirror import list_folder, refuse_existing, refuse_special, same_file
    from lyra.core.atomic import refuse_to_replace

    src = Path(inp)
    if inp == "-" or not src.is_dir():
        if same_file(inp, out):
            raise LyraError(f"{out}: is the input file; refusing to overwrite it")
        if not force:
            refuse_to_replace(out)
        with _progress(f"{label} {'<stdin>' if inp == '-' else Path(inp).name}", quiet) as report:
            summary = _guard_os(one, inp, out, report)
        if not quiet:
            echo(summary)
        return
    from lyra.core.progress import Progress

    dst = Path(out)
    files = list_folder(inp, out, suffixes, out_suffix)
    refuse_special(files)                  # a folder, a named pipe, ... at an output: even with --force
    if not force:
        refuse_existing(files, out)
    failures: list[str] = []
    with Progress(label, total=len(files), unit="files", quiet=quiet) as bar:
        for path, target in files:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                _guard_os(one, str(path), str(target), None)
            except LyraError as exc:
                failures.append(str(exc))
            except OSError as exc:             # its folder cannot be made
                failures.append(os_error_line(exc, target.parent))
            bar.advance(1)
    for message in failures:
        echo(f"lyra: error: {message}")
    if failures:
        raise LyraError(f"{len(failures)} of {len(files)} files failed; the others were written to {dst}")
    if not quiet:
        echo(f"{len(files)} files written to {dst}")


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
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="With a folder IN: also write this JSON Lines index, one line per complete output (source, duration_s, num_samples, sample_rate, frames, output), sorted by source; the latents' per-channel mean and std go beside it (latents.jsonl -> latents.stats.json).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="With a folder IN: encode files of equal latent frame counts N at a time (taken shortest first), the same latents as one at a time within float rounding.")] = 1,
    sample: Annotated[bool, typer.Option("--sample", help="With a folder IN: store posterior samples (mean + std * noise, seeded per file by --seed) instead of means; vae bottleneck only.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="With --sample: the seed; with the output's path inside OUT it seeds each file's noise.")] = 0,
    quantizers: QuantizersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Encode audio into a compact .lyra latent file (the posterior mean: deterministic; a
    model with a discrete bottleneck stores its integer codes, packed).

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
    from lyra.audio.container import check_dtype

    check_dtype(dtype)
    check_input(inp)
    if inp != "-" and Path(inp).is_dir():
        from lyra.codec.preencode import Job, run

        run(Job(inp, out, checkpoint, device=device, precision=precision, compile=compile, ema=ema, threads=threads,
                stream=stream, chunk_seconds=chunk_seconds, dtype=dtype, downmix=downmix, force=force,
                manifest=manifest, quiet=quiet, batch_size=batch_size, sample=sample, seed=seed, quantizers=quantizers),
            _Report(quiet))
        return
    if manifest is not None:
        raise LyraError("--manifest: only with a folder IN (a data set to pre-encode)")
    if batch_size != 1 or sample:
        raise LyraError(f"{'--sample' if sample else '--batch-size'}: only with a folder IN (a data set to pre-encode)")
    from lyra.core.distributed import launch

    if (here := launch()) is not None and here.world_size > 1:
        raise LyraError(f"{inp}: not a folder; under torchrun, `lyra encode` shares a folder's files "
                        "among the processes (run one process for one file)")
    codec = load_codec(checkpoint, device, threads, precision, compile, ema, chunk_seconds)
    codec.model.bottleneck.check_quantizers(quantizers)    # before any output
    from lyra.audio.folders import AUDIO_SUFFIXES

    def one(src: str, dst: str, progress: Optional[OnProgress]) -> str:
        done = codec.encode_file(src, dst, stream=stream, chunk_seconds=chunk_seconds, dtype=dtype,
                                 downmix=downmix, progress=progress, quantizers=quantizers)
        if done.truncation:
            echo(done.truncation)                    # the header promised more than the file holds
        h = done.header
        stored = f"{h.num_quantizers} codes of {h.codebook_size} per frame" if h.codes else dtype
        return f"{done.name}: {done.frames} frames, {done.seconds:.3f} s, {done.bitrate / 1000:.2f} kbit/s ({stored})"

    _run_files(inp, out, AUDIO_SUFFIXES, ".lyra", "encoding", one, force=force, quiet=quiet)


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
    check_input(inp)
    codec = load_codec(checkpoint, device, threads, precision, compile, ema, chunk_seconds)
    suffix = "." + (fmt or "wav").lower()

    def one(src: str, dst: str, progress: Optional[OnProgress]) -> str:
        done = codec.decode_file(src, dst, stream=stream, chunk_seconds=chunk_seconds, original_rate=original_rate,
                                 original_channels=original_channels, format=fmt, subtype=subtype, progress=progress)
        if done.clipped:
            echo(f"{done.name}: warning: {done.clipped} samples outside [-1, 1] were clipped (use --subtype FLOAT to keep them)")
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
    from lyra.audio.container import DTYPES, open_lyra
    from lyra.core.durations import format_duration

    check_input(file)
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
        "bottleneck": h.bottleneck, "bottleneck_options": h.bottleneck_options,
    }
    if h.codes:
        facts.update(codebook_size=h.codebook_size, num_quantizers=h.num_quantizers, bits_per_code=h.bits_per_frame // h.num_quantizers)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    extra = " + a float32 scale per frame" if h.dtype == "int8" else ""
    options = f" {json.dumps(h.bottleneck_options, sort_keys=True)}" if h.bottleneck_options else ""
    lines = [
        ("file", f"{facts['file']} (.lyra format version {reader.version}, {size:,} bytes, {reader.chunks} chunks, all CRC32 {'checks pass; chunk order not recorded' if reader.version == 1 else 'and chunk-order checks pass'})"),
        ("model", f"fingerprint {h.model_fingerprint}"),
        ("audio", f"{h.sample_rate} Hz, {h.channels} channels"),
        ("latent", f"{h.latent_dim} channels x {t.num_frames} frames at {h.frame_rate:.2f} Hz (hop {h.hop_length})"
                   + (f", stored as {h.num_quantizers} codes per frame" if h.codes else "")),
        ("storage", f"integer codes 0..{h.codebook_size - 1:,}, {facts['bits_per_code']} bits each, packed ({h.bits_per_frame} bits per frame)" if h.codes
                    else f"{h.dtype} ({DTYPES[h.dtype]} bits per value{extra})"),
        ("bottleneck", h.bottleneck + (f", {h.num_quantizers} quantizers of {h.codebook_size:,} codes" if h.codes else "") + options),
        ("duration", f"{format_duration(seconds, millis=True)} ({t.num_samples:,} samples)"),
        ("source", f"{h.source_sample_rate} Hz, {h.source_channels} channels, {t.source_num_samples:,} samples"),
        ("bitrate", f"{h.bitrate / 1000:.2f} kbit/s {'code' if h.codes else 'latent'} payload; {facts['file_kbps']:.2f} kbit/s file"),
    ]
    for key, value in lines:
        typer.echo(f"{key + ':':<12}{value}")


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
    app.command("decode")(decode)
    app.command("info")(info)
