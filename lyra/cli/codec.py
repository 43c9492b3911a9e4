"""Codec commands: `lyra encode`, `lyra decode`, `lyra info`, `lyra eval`.

Every IN/OUT may be ``-`` (stdin/stdout), so ``... | lyra encode --stream - - | lyra decode
--stream - out.wav`` is a pipeline; a folder as IN is processed file by file into a mirrored
folder OUT (`lyra encode` of a folder is a resumable dataset job, parallel under torchrun:
`lyra.preencode`). Messages go to stderr (stdout may be carrying data). Outputs are written
atomically: an error or Ctrl-C leaves nothing behind, and inputs are never modified.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer

from lyra.errors import LyraError

DTYPE_CHOICES = ("float16", "bfloat16", "float32", "int8")
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="Model checkpoint (from `lyra init-checkpoint` or `lyra train`).")]
StreamOpt = Annotated[bool, typer.Option("--stream", help="Process in overlapping chunks: constant memory, starts output at once, same result as without.")]
ChunkOpt = Annotated[float, typer.Option("--chunk-seconds", help="Audio per chunk with --stream (plus the model's receptive field of context either side).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the model runs: auto (cuda if available), cpu, cuda, cuda:1, ...")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the model (default: torch's choice; use 1 per process when piping two lyra processes on few cores).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model first (a one-off cost of seconds to minutes; then faster, same output within float32 rounding).")]
EmaOpt = Annotated[bool, typer.Option("--ema/--no-ema", help="Use the checkpoint's EMA weights when it has them (training with [ema] saves them); --no-ema: the raw trained weights.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Compute in fp32, bf16 or fp16 (reduced precision is fast on GPUs and CPUs with AVX-512 BF16/AMX, slow elsewhere).")]


# ---------------------------------------------------------------------------------------
# Shared plumbing
# ---------------------------------------------------------------------------------------
@dataclass
class _Codec:
    """A loaded model and what every file needs from it."""

    model: object
    fingerprint: str
    checkpoint: Path

    @property
    def config(self):
        return self.model.config

    def chunk_frames(self, seconds: float) -> int:
        if not seconds > 0:
            raise LyraError(f"--chunk-seconds: must be positive, got {seconds}")
        return max(1, round(seconds * self.config.sample_rate / self.config.hop_length))


def _load(checkpoint: Path, device: str, threads: Optional[int] = None, precision: str = "fp32",
          compile: bool = False, ema: bool = True) -> _Codec:
    import torch

    from lyra.checkpoint import load_model, model_fingerprint
    from lyra.inference import precision_dtype, prepare_model, resolve_device

    if threads is not None:
        if threads < 1:
            raise LyraError(f"--threads: must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    precision_dtype(precision)                 # a bad --precision fails before the model loads
    model = load_model(checkpoint, dev, ema=ema)
    fingerprint = model_fingerprint(model)     # of the stored (fp32) weights, before any cast
    return _Codec(prepare_model(model, device=dev, precision=precision, compile=compile), fingerprint, checkpoint)


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _label(path: str) -> str:
    return "<stdout>" if path == "-" else path


def _same_file(a: str, b: str) -> bool:
    if "-" in (a, b):
        return False
    pa, pb = Path(a), Path(b)
    try:
        return pa.resolve() == pb.resolve() or (pb.exists() and pa.exists() and pa.samefile(pb))
    except OSError:
        return False


def _run_files(inp: str, out: str, suffixes: tuple[str, ...], out_suffix: str, label: str,
               one: Callable[[str, str], str], force: bool = False) -> None:
    """One file, or every matching file of folder `inp` into the mirrored folder `out`.

    `one(src, dst)` processes a file and returns a one-line summary, printed for a single
    file; a folder gets a progress bar, and failures are listed at the end. Existing outputs
    are refused before any work unless `force` (--force). (`lyra encode` of a folder is
    `lyra.preencode` instead: resumable, and parallel under torchrun.)
    """
    from lyra.atomic import refuse_to_replace

    src = Path(inp)
    if inp == "-" or not src.is_dir():
        if _same_file(inp, out):
            raise LyraError(f"{out}: is the input file; refusing to overwrite it")
        if not force:
            refuse_to_replace(out)
        _echo(_guard_os(one, inp, out))
        return
    from lyra.preencode import list_folder

    dst = Path(out)
    files = list_folder(inp, out, suffixes, out_suffix)
    targets = {target: path for path, target in files}
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        more = f", as do {len(existing) - 1} more in {out}" if len(existing) > 1 else ""
        raise LyraError(f"{existing[0]}: already exists{more} (pass --force to overwrite)")
    failures: list[str] = []
    with typer.progressbar(list(targets.items()), label=label, file=sys.stderr, show_pos=True) as bar:
        for target, path in bar:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                _guard_os(one, str(path), str(target))
            except LyraError as exc:
                failures.append(str(exc))
    for message in failures:
        _echo(f"lyra: error: {message}")
    if failures:
        raise LyraError(f"{len(failures)} of {len(files)} files failed; the others were written to {dst}")
    _echo(f"{len(files)} files written to {dst}")


def _guard_os(one: Callable[[str, str], str], inp: str, out: str) -> str:
    try:
        return one(inp, out)
    except OSError as exc:   # disk full, permissions, ...: still one line naming the file
        name = exc.filename or out
        raise LyraError(f"{name}: {exc.strerror or exc}") from None


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
) -> None:
    """Encode audio into a compact .lyra latent file (the posterior mean: deterministic).

    Audio is resampled to the model's rate and mono is duplicated to the model's channels.
    Without --stream the whole file is processed at once (memory grows with its length);
    with --stream it goes through in overlapping chunks with the same result.

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
    codec = _load(checkpoint, device, threads, precision, compile, ema)
    frames = codec.chunk_frames(chunk_seconds)
    from lyra.audio import AUDIO_SUFFIXES

    def one(src: str, dst: str) -> str:
        trailer, header = _encode_one(codec, src, dst, stream, frames, dtype, downmix)
        return (f"{_label(dst)}: {trailer.num_frames} frames, {trailer.num_samples / header.sample_rate:.3f} s, "
                f"{header.bitrate / 1000:.2f} kbit/s ({dtype})")

    _run_files(inp, out, AUDIO_SUFFIXES, ".lyra", "encoding", one, force=force)


def _encode_folder(inp: str, out: str, checkpoint: Path, stream: bool, chunk_seconds: float, device: str,
                   threads: Optional[int], compile: bool, precision: str, dtype: str, downmix: bool,
                   force: bool, manifest: Optional[str], ema: bool = True) -> None:
    """`lyra encode DIR OUT_DIR`: the job is `lyra.preencode.run`; here, how to load and encode."""
    from lyra.audio import AUDIO_SUFFIXES
    from lyra.preencode import Job, run

    def load(dev: str) -> _Codec:      # on this process's device (cuda:LOCAL_RANK under torchrun)
        codec = _load(checkpoint, dev, threads, precision, compile, ema)
        codec.chunk_frames(chunk_seconds)
        return codec

    def encode_file(codec: _Codec, src: str, dst: str):
        frames = codec.chunk_frames(chunk_seconds)
        return _guard_os(lambda s, d: _encode_one(codec, s, d, stream, frames, dtype, downmix), src, dst)

    run(Job(inp, out, load, encode_file, AUDIO_SUFFIXES, device=device, dtype=dtype, force=force, manifest=manifest))


def _encode_one(codec: _Codec, src: str, dst: str, stream: bool, chunk_frames: int, dtype: str, downmix: bool):
    import torch

    from lyra.atomic import atomic_write
    from lyra.audio import check_channels, conform, load_audio, open_audio
    from lyra.container import Header, LatentWriter
    from lyra.inference import model_device_dtype
    from lyra.streaming import encode_stream

    cfg, model = codec.config, codec.model

    def header(source_rate: int, source_channels: int) -> Header:
        return Header(cfg.sample_rate, cfg.channels, cfg.hop_length, cfg.latent_dim, dtype,
                      codec.fingerprint, source_rate, source_channels)

    if not stream:
        x, info = load_audio(src, cfg.sample_rate, cfg.channels, downmix)   # [C, T]
        if info.truncation:
            _echo(info.truncation)                   # the header promised more than the file holds
        with torch.inference_mode():
            mean, _ = model.encode(x[None].to(*model_device_dtype(model)))   # [1, C, T] -> [1, D, F]
        h = header(info.sample_rate, info.channels)
        with atomic_write(dst) as f:
            writer = LatentWriter(f, h, _label(dst))
            writer.write(mean[0].float().cpu())
            return writer.finish(x.shape[-1], info.frames), h

    with open_audio(src) as source:
        check_channels(source.channels, cfg.channels, downmix, source.name)
        h = header(source.sample_rate, source.channels)
        count = [0]

        def counted() -> Iterator[torch.Tensor]:
            for block in conform(source, cfg.sample_rate, cfg.channels, downmix):
                count[0] += block.shape[-1]
                yield block

        with atomic_write(dst) as f:
            writer = LatentWriter(f, h, _label(dst))
            for latents in encode_stream(model, counted(), chunk_frames):
                writer.write(latents)
            if source.truncation:
                _echo(source.truncation)             # the header promised more than the file holds
            return writer.finish(count[0], source.frames_read), h


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
    fmt: Annotated[Optional[str], typer.Option("--format", help="wav or flac (default: from OUT's suffix; wav for - and folders).")] = None,
    subtype: Annotated[str, typer.Option("--subtype", help="Sample format: PCM_16 or PCM_24 (WAV or FLAC), FLOAT (WAV). PCM clips to [-1, 1].")] = "PCM_16",
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT (or files in the OUT folder) if it exists.")] = False,
) -> None:
    """Decode a .lyra latent file back to audio (WAV or FLAC).

    The checkpoint must be the model that encoded the file (its fingerprint is in the
    header). With --stream the latents are decoded in overlapping chunks as they arrive.

    \b
    Examples:  lyra decode song.lyra song.wav -c model.pt
               lyra decode song.lyra song.flac -c model.pt --original-rate
               lyra encode --stream - - -c model.pt < in.wav | lyra decode --stream - out.wav -c model.pt
    """
    _check_input(inp)
    codec = _load(checkpoint, device, threads, precision, compile, ema)
    frames = codec.chunk_frames(chunk_seconds)
    suffix = "." + (fmt or "wav").lower()

    def one(src: str, dst: str) -> str:
        written, rate, clipped = _decode_one(codec, src, dst, stream, frames, original_rate, fmt, subtype)
        if clipped:
            _echo(f"{_label(dst)}: warning: {clipped} samples outside [-1, 1] were clipped (use --subtype FLOAT to keep them)")
        return f"{_label(dst)}: {written / rate:.3f} s at {rate} Hz"

    _run_files(inp, out, (".lyra",), suffix, "decoding", one, force=force)


def _decode_one(codec: _Codec, src: str, dst: str, stream: bool, chunk_frames: int,
                original_rate: bool, fmt: Optional[str], subtype: str) -> tuple[int, int, int]:
    import torch

    from lyra.audio import AudioWriter, output_format, resample, resample_stream
    from lyra.container import open_lyra
    from lyra.inference import model_device_dtype
    from lyra.streaming import crop_stream, decode_stream

    output_format(dst, fmt)   # a bad OUT is reported before any work
    model = codec.model
    with open_lyra(src) as reader:
        h = reader.header
        _check_model(codec, h, src)
        rate = h.source_sample_rate if original_rate else h.sample_rate
        if not stream:
            z = reader.read_all()                                              # [D, F]
            with torch.inference_mode():
                audio = model.decode(z[None].to(*model_device_dtype(model)), reader.trailer.num_samples)[0]
            audio = audio.float().cpu()                                        # [C, T]
            if original_rate:
                audio = resample(audio, h.sample_rate, rate)[..., :reader.trailer.source_num_samples]
            with AudioWriter(dst, rate, h.channels, subtype, fmt, frames=audio.shape[-1]) as writer:
                writer.write(audio)
            return writer.written, rate, writer.clipped

        blocks = decode_stream(model, reader, chunk_frames, length=lambda: reader.trailer.num_samples)
        if original_rate:
            slack = math.ceil(h.source_sample_rate / h.sample_rate) + 1
            blocks = crop_stream(resample_stream(blocks, h.sample_rate, rate),
                                 lambda: reader.trailer.source_num_samples, slack)
        with AudioWriter(dst, rate, h.channels, subtype, fmt) as writer:
            for block in blocks:
                writer.write(block)
        return writer.written, rate, writer.clipped


def _check_model(codec: _Codec, header, src: str) -> None:
    if header.model_fingerprint != codec.fingerprint:
        raise LyraError(
            f"{src}: written by model {header.model_fingerprint}, but {codec.checkpoint} is model "
            f"{codec.fingerprint}; decode with the checkpoint that encoded it"
        )
    from lyra.container import check_model

    check_model(header, codec.config, src, str(codec.checkpoint))   # a header altered, CRC redone


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
        ("duration", f"{_clock(seconds)} ({t.num_samples:,} samples)"),
        ("source", f"{h.source_sample_rate} Hz, {h.source_channels} channels, {t.source_num_samples:,} samples"),
        ("bitrate", f"{h.bitrate / 1000:.2f} kbit/s latent payload; {facts['file_kbps']:.2f} kbit/s file"),
    ]
    for key, value in lines:
        typer.echo(f"{key + ':':<10}{value}")


def _clock(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{int(hours)}:" if hours else "") + f"{int(minutes):02d}:{secs:06.3f}"


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
        codec = _load(checkpoint, device, threads, precision, compile, ema)
        frames = codec.chunk_frames(chunk_seconds)

        def measure(path: Path, rel: str) -> dict[str, float]:
            return _round_trip(codec, path, stream, frames, dtype, downmix)

    if len(pairs) == 1:
        rows, failed = [(pairs[0][1], measure(*pairs[0]))], {}
    else:
        rows, failed = _measure_all(pairs, measure)
    mean = {k: sum(r[k] for _, r in rows) / len(rows) for k in METRICS} if rows else None
    if as_json:
        typer.echo(json.dumps({"files": {name: r for name, r in rows}, "mean": mean, "failed": failed}, indent=2))
    elif rows:
        _print_table(rows, mean)
    for message in failed.values():
        _echo(f"lyra: error: {message}")
    if failed:
        raise LyraError(f"{len(failed)} of {len(pairs)} files failed; the others were measured")


def _measure_all(pairs: list[tuple[Path, str]], measure: Callable[[Path, str], dict[str, float]]
                 ) -> tuple[list[tuple[str, dict[str, float]]], dict[str, str]]:
    """Every pair measured, with a progress bar: (rows, {name: error} for the pairs that failed)."""
    rows: list[tuple[str, dict[str, float]]] = []
    failed: dict[str, str] = {}
    with typer.progressbar(pairs, label="evaluating", file=sys.stderr) as bar:
        for path, rel in bar:
            try:
                rows.append((rel, measure(path, rel)))
            except LyraError as exc:
                failed[rel] = str(exc)
            except OSError as exc:   # still one line naming the file
                failed[rel] = f"{exc.filename or path}: {exc.strerror or exc}"
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


def _round_trip(codec: _Codec, path: Path, stream: bool, chunk_frames: int, dtype: str, downmix: bool) -> dict[str, float]:
    import torch

    from lyra.audio import load_audio
    from lyra.container import stored
    from lyra.inference import model_device_dtype
    from lyra.streaming import decode_stream, encode_stream

    cfg, model = codec.config, codec.model
    x, _ = load_audio(path, cfg.sample_rate, cfg.channels, downmix)        # [C, T]
    device_dtype = model_device_dtype(model)
    if stream:
        blocks = x.split(cfg.sample_rate, dim=-1)
        z = stored(torch.cat(list(encode_stream(model, blocks, chunk_frames)), dim=-1), dtype)
        y = torch.cat(list(decode_stream(model, z.split(chunk_frames, dim=-1), chunk_frames, x.shape[-1])), dim=-1)
    else:
        with torch.inference_mode():
            mean, _ = model.encode(x[None].to(*device_dtype))  # [1, C, T] -> [1, D, F]
            z = stored(mean[0].float().cpu(), dtype)                        # as a .lyra file stores it
            y = model.decode(z[None].to(*device_dtype), x.shape[-1])[0].float().cpu()
    return _metrics(x, y, cfg.sample_rate)


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
    app.command("decode")(decode)
    app.command("info")(info)
    app.command("eval")(evaluate)
