"""The codec as a library: one object, loaded once, that does what `lyra encode/decode` do.

    codec = Codec.load("model.pt", device="auto")          # model, fingerprint, precision, ...
    z = codec.encode(audio, sample_rate=48000)             # [C, T] float audio -> [D, F] latents
    y = codec.decode(z, length=T)                          # [D, F] -> [C, T] at codec.sample_rate
    codec.encode_file("song.wav", "song.lyra", stream=True)
    codec.decode_file("song.lyra", "song.decoded.wav", original_rate=True)

A `Codec` holds a model ready for inference (moved to its device, cast to its precision,
compiled if asked: `lyra.inference.prepare_model`), the model's fingerprint (stored in the
checkpoint since fingerprints were stored, so loading never hashes the weights; computed
once otherwise), and, measured on first use, its streaming plan (the receptive field that
sizes the overlap of streamed chunks: `lyra.streaming`).

Three forms of each operation, for three kinds of caller:

- tensors (`encode`, `decode`, `round_trip`): the whole signal in memory. ``[C, T]`` or
  ``[B, C, T]`` float audio in (any device; resampled to the model's rate when `sample_rate`
  is given; mono duplicated to the model's channels), ``[D, F]`` / ``[B, D, F]`` float32 CPU
  posterior means out, and back. ``stream=True`` computes through overlapping chunks instead
  of one forward pass: less memory for the model's activations, the same result within float
  rounding.
- iterators (`encode_iter`, `decode_iter`): audio (or latents) that arrives in pieces, of any
  length, in constant memory: ``[C, n]`` blocks at the model's rate in, ``[D, f]`` latent
  blocks out, as soon as they are determined.
- files (`encode_file`, `decode_file`): what the command line does, with its guarantees:
  any audio file, ``.lyra`` files, or ``"-"`` for stdin/stdout; outputs written atomically
  (`lyra.atomic`); inputs never modified; a ``.lyra`` from another model refused with one
  line. They return a small record of what was written (`EncodedFile`, `DecodedFile`), and
  take an optional ``progress(done_seconds, total_seconds_or_None)`` callback. The library
  never prints: warnings (a truncated source, clipped samples) are in the returned record.

Streamed and whole-signal results are equal within float rounding (about 1e-4 for unit-scale
audio in float32; once latents are stored as float16, a value may land one float16 step
away), not bit for bit: chunking, like the number of threads, changes the order of float
operations. Every error a caller can cause is a one-line `LyraError`.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Union

import torch

from lyra.errors import LyraError
from lyra.inference import decode_latents, encode_mean, model_device_dtype

if TYPE_CHECKING:
    from lyra.config import ModelConfig
    from lyra.container import Header, Trailer
    from lyra.model import VAE
    from lyra.streaming import StreamingPlan

# ``progress(done_seconds, total_seconds)``: seconds of audio processed so far, of a total
# that is None when not known (a stream); called as the work goes, last with done == total.
ProgressCallback = Callable[[float, Optional[float]], None]
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class EncodedFile:
    """What `Codec.encode_file` wrote: the `.lyra` file's header and trailer, and a one-line
    warning (`truncation`) when the source's header promised more audio than it held."""

    path: str
    header: Header
    trailer: Trailer
    truncation: Optional[str] = None

    @property
    def name(self) -> str:
        """`path` as messages name it (``<stdout>`` for "-")."""
        return _label(self.path)

    @property
    def frames(self) -> int:
        return self.trailer.num_frames

    @property
    def samples(self) -> int:
        """Audio samples encoded, at the model's rate (decoding gives back exactly these)."""
        return self.trailer.num_samples

    @property
    def seconds(self) -> float:
        return self.trailer.num_samples / self.header.sample_rate

    @property
    def bitrate(self) -> float:
        """The latent payload in bit/s."""
        return self.header.bitrate


@dataclass(frozen=True)
class DecodedFile:
    """What `Codec.decode_file` wrote: `samples` per channel at `sample_rate`, and how many
    samples a PCM subtype clipped to [-1, 1] (`clipped`, 0 for FLOAT)."""

    path: str
    samples: int
    sample_rate: int
    channels: int
    clipped: int = 0

    @property
    def name(self) -> str:
        """`path` as messages name it (``<stdout>`` for "-")."""
        return _label(self.path)

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


class Codec:
    """A model ready to encode and decode, with its fingerprint (see the module doc).

    `Codec.load(checkpoint, ...)` from a file; ``Codec(model, fingerprint)`` from a `VAE` in
    memory, which is moved, cast and put in eval mode in place (`prepare_model`); without
    `fingerprint` its weights are hashed once, before any cast. `device` None keeps the model
    where it is.
    """

    def __init__(self, model: VAE, fingerprint: Optional[str] = None, *,
                 device: Optional[Union[str, torch.device]] = None, precision: str = "fp32",
                 compile: bool = False, checkpoint: Optional[PathLike] = None) -> None:
        from lyra.checkpoint import model_fingerprint
        from lyra.inference import precision_dtype, prepare_model, resolve_device

        precision_dtype(precision)                  # a bad precision fails before any work
        if fingerprint is None:
            fingerprint = model_fingerprint(model)  # of the weights as given, before any cast
        dev = model_device_dtype(model)[0] if device is None else resolve_device(device)
        self.model = prepare_model(model, device=dev, precision=precision, compile=compile)
        self.fingerprint: str = fingerprint
        self.precision, self.compiled = precision, compile
        self.checkpoint: Optional[Path] = None if checkpoint is None else Path(checkpoint)

    @classmethod
    def load(cls, checkpoint: PathLike, *, device: Union[str, torch.device] = "auto", precision: str = "fp32",
             compile: bool = False, ema: bool = True, threads: Optional[int] = None) -> "Codec":
        """The model of `checkpoint` (from `lyra init-checkpoint`, `lyra train` or `lyra import`),
        with its EMA weights when it has them unless `ema` is False. `device` "auto" is CUDA
        when available; `precision` fp32, bf16 or fp16; `compile` runs `torch.compile` first.
        `threads` sets torch's CPU thread count, for the whole process."""
        from lyra.checkpoint import load_model_and_fingerprint
        from lyra.inference import precision_dtype, resolve_device

        if threads is not None:
            if threads < 1:
                raise LyraError(f"--threads: must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        precision_dtype(precision)                 # a bad precision fails before the model loads
        model, fingerprint = load_model_and_fingerprint(checkpoint, dev, ema=ema)
        return cls(model, fingerprint, device=dev, precision=precision, compile=compile, checkpoint=checkpoint)

    # -- what it is --------------------------------------------------------------------
    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        return self.config.hop_length

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def device(self) -> torch.device:
        return model_device_dtype(self.model)[0]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (inputs are cast to it; outputs are float32)."""
        return model_device_dtype(self.model)[1]

    @property
    def plan(self) -> StreamingPlan:
        """The model's receptive field and decoder stages, as streaming uses them (measured on
        first use, eagerly, then kept)."""
        from lyra.streaming import streaming_plan

        return streaming_plan(self.model)

    def chunk_frames(self, seconds: float) -> int:
        """Latent frames per streamed chunk for `seconds` of audio (at least one)."""
        if not seconds > 0:
            raise LyraError(f"--chunk-seconds: must be positive, got {seconds}")
        return max(1, round(seconds * self.sample_rate / self.hop_length))

    def __repr__(self) -> str:
        where = f"{self.checkpoint}, " if self.checkpoint is not None else ""
        return (f"Codec({where}model {self.fingerprint}, {self.sample_rate} Hz x {self.channels}, "
                f"{self.device}, {self.precision}{', compiled' if self.compiled else ''})")

    # -- tensors -----------------------------------------------------------------------
    def encode(self, audio: torch.Tensor, *, sample_rate: Optional[int] = None, stream: bool = False,
               chunk_seconds: float = 10.0) -> torch.Tensor:
        """Posterior means: [C, T] -> [D, ceil(T' / hop)], or [B, C, T] -> [B, D, F], float32
        on the CPU (T' is T at the model's rate). The mean is deterministic: no sampling."""
        x, batched = self._audio(audio, sample_rate)                     # [B, C, T] at the model's rate
        if stream:
            frames = self.chunk_frames(chunk_seconds)
            from lyra.streaming import encode_stream

            z = torch.stack([torch.cat(list(encode_stream(self.model, [item], frames)), dim=-1)
                             for item in x])                             # B x [D, F] -> [B, D, F]
        else:
            z = encode_mean(self.model, x)                               # [B, C, T] -> [B, D, F]
        return z if batched else z[0]

    def decode(self, latents: torch.Tensor, length: Optional[int] = None, *, stream: bool = False,
               chunk_seconds: float = 10.0) -> torch.Tensor:
        """Audio at the model's rate: [D, F] -> [C, length], or [B, D, F] -> [B, C, length],
        float32 on the CPU; `length` (samples, 1..F * hop) defaults to F * hop."""
        z, batched = self._latents(latents, length)
        if stream:
            frames = self.chunk_frames(chunk_seconds)
            from lyra.streaming import decode_stream

            y = torch.stack([torch.cat(list(decode_stream(self.model, [item], frames, length)), dim=-1)
                             for item in z])                             # B x [C, T] -> [B, C, T]
        else:
            y = decode_latents(self.model, z, length)                    # [B, D, F] -> [B, C, T]
        return y if batched else y[0]

    def round_trip(self, audio: torch.Tensor, *, sample_rate: Optional[int] = None, dtype: str = "float16",
                   stream: bool = False, chunk_seconds: float = 10.0) -> torch.Tensor:
        """Encode, store the latents as a `.lyra` file of `dtype` would, and decode: what
        ``lyra encode`` then ``lyra decode`` give, at the model's rate and channels, the
        input's length: [C, T] -> [C, T'] (or batched)."""
        from lyra.container import DTYPES, stored

        if dtype not in DTYPES:
            raise LyraError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        x, batched = self._audio(audio, sample_rate)                     # [B, C, T]
        z = self.encode(x, stream=stream, chunk_seconds=chunk_seconds)   # [B, D, F]
        z = torch.stack([stored(item, dtype) for item in z])             # as a .lyra file holds them
        y = self.decode(z, x.shape[-1], stream=stream, chunk_seconds=chunk_seconds)   # [B, C, T]
        return y if batched else y[0]

    # -- iterators ---------------------------------------------------------------------
    def encode_iter(self, blocks: Iterable[torch.Tensor], *, chunk_seconds: float = 10.0) -> Iterator[torch.Tensor]:
        """[C, n] audio blocks at the model's rate (any sizes; mono is duplicated) -> [D, f]
        latent blocks, each yielded once determined; their concatenation equals `encode` of the
        concatenated audio (within float rounding). Memory: one chunk, whatever the length."""
        from lyra.streaming import encode_stream

        return encode_stream(self.model, self._checked_blocks(blocks), self.chunk_frames(chunk_seconds))

    def decode_iter(self, latents: Iterable[torch.Tensor], length: Union[int, Callable[[], int], None] = None, *,
                    chunk_seconds: float = 10.0) -> Iterator[torch.Tensor]:
        """[D, f] latent blocks -> [C, n] audio blocks at the model's rate, cropped to `length`
        samples in all (default: frames * hop). `length` may be a callable, asked once the
        latents are exhausted (a streamed `.lyra` file records its length at its end)."""
        from lyra.streaming import decode_stream

        return decode_stream(self.model, latents, self.chunk_frames(chunk_seconds), length)

    # -- files -------------------------------------------------------------------------
    def encode_file(self, src: PathLike, dst: PathLike, *, stream: bool = False, chunk_seconds: float = 10.0,
                    dtype: str = "float16", downmix: bool = False,
                    progress: Optional[ProgressCallback] = None) -> EncodedFile:
        """Encode audio file `src` ("-": stdin) into the `.lyra` file `dst` ("-": stdout).

        Any rate and bit depth (resampled to the model's); mono is duplicated; more channels
        than the model's is an error unless `downmix` (their mean). `stream`: constant memory,
        in chunks of `chunk_seconds`; otherwise the whole file at once. `dtype`: latent storage
        (float16, bfloat16, float32, int8). `dst` appears only when complete.
        """
        from lyra.atomic import atomic_write
        from lyra.audio import check_channels, conform, load_audio, open_audio
        from lyra.container import DTYPES, Header, LatentWriter

        if dtype not in DTYPES:
            raise LyraError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        src, dst = str(src), str(dst)
        frames = self.chunk_frames(chunk_seconds)
        cfg, report = self.config, _reporter(progress)

        def header(source_rate: int, source_channels: int) -> Header:
            return Header(cfg.sample_rate, cfg.channels, cfg.hop_length, cfg.latent_dim, dtype,
                          self.fingerprint, source_rate, source_channels)

        if not stream:
            x, info = load_audio(src, cfg.sample_rate, cfg.channels, downmix)   # [C, T]
            seconds = x.shape[-1] / cfg.sample_rate
            report(0.0, seconds)
            mean = encode_mean(self.model, x[None])[0]                       # [1, C, T] -> [D, F]
            report(seconds, seconds)
            h = header(info.sample_rate, info.channels)
            with atomic_write(dst) as f:
                writer = LatentWriter(f, h, _label(dst))
                writer.write(mean)
                trailer = writer.finish(x.shape[-1], info.frames)
            return EncodedFile(dst, h, trailer, info.truncation)

        from lyra.streaming import encode_stream

        with open_audio(src) as source:
            check_channels(source.channels, cfg.channels, downmix, source.name)
            h = header(source.sample_rate, source.channels)
            expected = source.expected_frames
            total = None if expected is None else expected / source.sample_rate
            count = [0]

            def counted() -> Iterator[torch.Tensor]:
                for block in conform(source, cfg.sample_rate, cfg.channels, downmix):   # [C, n]
                    count[0] += block.shape[-1]
                    yield block

            report(0.0, total)
            with atomic_write(dst) as f:
                writer = LatentWriter(f, h, _label(dst))
                for latents in encode_stream(self.model, counted(), frames):    # [D, f] each
                    writer.write(latents)
                    done = writer.frames * cfg.hop_length / cfg.sample_rate
                    report(done if total is None else min(done, total), total)
                trailer = writer.finish(count[0], source.frames_read)
            seconds = count[0] / cfg.sample_rate
            report(seconds, seconds)
            return EncodedFile(dst, h, trailer, source.truncation)

    def decode_file(self, src: PathLike, dst: PathLike, *, stream: bool = False, chunk_seconds: float = 10.0,
                    original_rate: bool = False, original_channels: bool = False, format: Optional[str] = None,
                    subtype: str = "PCM_16", progress: Optional[ProgressCallback] = None) -> DecodedFile:
        """Decode the `.lyra` file `src` ("-": stdin) to a WAV or FLAC `dst` ("-": stdout).

        The file must have been written by this codec's model (its fingerprint is in the
        header). Output at the model's rate and channels, or with `original_rate` the source
        file's rate, with `original_channels` its channel count (a mono source: the mean of
        the decoded channels). `format` wav or flac (default: `dst`'s suffix; wav for "-");
        `subtype` PCM_16, PCM_24 (clipped to [-1, 1]) or FLOAT.
        """
        from lyra.audio import AudioWriter, mix_channels, output_format, resample, resample_stream
        from lyra.container import open_lyra
        from lyra.overlap import crop_stream
        from lyra.streaming import decode_stream

        src, dst = str(src), str(dst)
        output_format(dst, format)          # a bad dst is reported before any work
        frames = self.chunk_frames(chunk_seconds)
        report = _reporter(progress)
        with open_lyra(src) as reader:
            h = reader.header
            self.check_header(h, src)
            rate = h.source_sample_rate if original_rate else h.sample_rate
            mono = original_channels and h.source_channels != h.channels
            if mono and h.source_channels != 1:
                raise LyraError(f"{src}: its source had {h.source_channels} channels, mixed down when encoded; "
                                "--original-channels cannot restore them")
            channels = 1 if mono else h.channels

            if not stream:
                z = reader.read_all()                                            # [D, F]
                seconds = reader.trailer.num_samples / h.sample_rate
                report(0.0, seconds)
                audio = decode_latents(self.model, z[None], reader.trailer.num_samples)[0]   # [C, T]
                if mono:
                    audio = mix_channels(audio, 1, downmix=True)                 # [C, T] -> [1, T]
                if original_rate:
                    audio = resample(audio, h.sample_rate, rate)[..., :reader.trailer.source_num_samples]
                with AudioWriter(dst, rate, channels, subtype, format, frames=audio.shape[-1]) as writer:
                    writer.write(audio)
                report(seconds, seconds)
                return DecodedFile(dst, writer.written, rate, channels, writer.clipped)

            total = _estimated_seconds(src, h)
            done = [0]

            def counted(blocks: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
                report(0.0, total)
                for block in blocks:                                             # [C, n] at the model's rate
                    done[0] += block.shape[-1]
                    seconds = done[0] / h.sample_rate
                    report(seconds if total is None else min(seconds, total), total)
                    yield mix_channels(block, 1, downmix=True) if mono else block   # [C, n] -> [1, n]

            blocks = counted(decode_stream(self.model, reader, frames, length=lambda: reader.trailer.num_samples))
            if original_rate:
                slack = math.ceil(h.source_sample_rate / h.sample_rate) + 1
                blocks = crop_stream(resample_stream(blocks, h.sample_rate, rate),
                                     lambda: reader.trailer.source_num_samples, slack)
            with AudioWriter(dst, rate, channels, subtype, format) as writer:
                for block in blocks:
                    writer.write(block)
            seconds = done[0] / h.sample_rate
            report(seconds, seconds)
            return DecodedFile(dst, writer.written, rate, channels, writer.clipped)

    def check_header(self, header: Header, name: str) -> None:
        """Refuse (one line) a `.lyra` header written by another model, or altered."""
        from lyra.container import check_model

        model = str(self.checkpoint) if self.checkpoint is not None else "this codec"
        if header.model_fingerprint != self.fingerprint:
            raise LyraError(f"{name}: written by model {header.model_fingerprint}, but {model} is model "
                            f"{self.fingerprint}; decode with the checkpoint that encoded it")
        check_model(header, self.config, name, model)   # a header altered, its CRC redone

    # -- checks ------------------------------------------------------------------------
    def _audio(self, audio: torch.Tensor, sample_rate: Optional[int]) -> tuple[torch.Tensor, bool]:
        """[C, T] or [B, C, T] float audio -> ([B, channels, T'] at the model's rate, batched)."""
        if not isinstance(audio, torch.Tensor) or not audio.is_floating_point():
            raise LyraError(f"audio: expected a float tensor, got {_kind(audio)}")
        if audio.dim() not in (2, 3) or audio.shape[-1] < 1:
            raise LyraError(f"audio: expected shape [channels, samples] or [batch, channels, samples] with "
                            f"samples >= 1, got {list(audio.shape)}")
        x = audio if audio.dim() == 3 else audio[None]                        # [C, T] -> [1, C, T]
        if x.shape[1] not in (1, self.channels):
            raise LyraError(f"audio: has {x.shape[1]} channels; the model takes {self.channels} (or mono, "
                            "which is duplicated)")
        if not torch.isfinite(x).all():
            raise LyraError("audio: holds NaN or infinite samples; audio must be finite")
        if sample_rate is not None and sample_rate != self.sample_rate:
            from lyra.audio import resample

            if not isinstance(sample_rate, int) or sample_rate <= 0:
                raise LyraError(f"sample_rate: expected a positive integer, got {sample_rate!r}")
            x = resample(x.float(), sample_rate, self.sample_rate)            # [B, C, T] -> [B, C, T']
        return x.expand(-1, self.channels, -1), audio.dim() == 3             # mono -> [B, channels, T']

    def _latents(self, latents: torch.Tensor, length: Optional[int]) -> tuple[torch.Tensor, bool]:
        """[D, F] or [B, D, F] -> ([B, D, F], batched), with `length` checked against F."""
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            raise LyraError(f"latents: expected a float tensor, got {_kind(latents)}")
        if latents.dim() not in (2, 3) or latents.shape[-2] != self.latent_dim or latents.shape[-1] < 1:
            raise LyraError(f"latents: expected shape [{self.latent_dim}, frames] or [batch, {self.latent_dim}, "
                            f"frames], got {list(latents.shape)}")
        full = latents.shape[-1] * self.hop_length
        if length is not None and not 0 < length <= full:
            raise LyraError(f"decode: length must be in 1..{full} for {latents.shape[-1]} frames, got {length}")
        return (latents if latents.dim() == 3 else latents[None]), latents.dim() == 3

    def _checked_blocks(self, blocks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for i, block in enumerate(blocks):
            if not isinstance(block, torch.Tensor) or block.dim() != 2 or block.shape[0] not in (1, self.channels):
                shape = list(block.shape) if isinstance(block, torch.Tensor) else _kind(block)
                raise LyraError(f"audio block {i}: expected shape [{self.channels} or 1, samples], got {shape}")
            yield block.expand(self.channels, -1)                            # [1, n] -> [C, n]


def _reporter(progress: Optional[ProgressCallback]) -> ProgressCallback:
    return progress if progress is not None else (lambda done, total: None)


def _label(path: str) -> str:
    return "<stdout>" if path == "-" else path


def _kind(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


def _estimated_seconds(src: str, header: Header) -> Optional[float]:
    """Seconds of audio a regular `.lyra` file holds, from its size (chunk overheads make it a
    slight overestimate); None for a stream."""
    from lyra.container import frame_bytes

    if src == "-":
        return None
    try:
        info = os.stat(src)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    frames = info.st_size // frame_bytes(header.dtype, header.latent_dim)
    return frames * header.hop_length / header.sample_rate
