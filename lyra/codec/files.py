"""The file forms of the codec (`Codec.encode_file`, `Codec.decode_file`): an audio file to a
`.lyra` file and back, ``"-"`` being stdin/stdout, outputs written atomically, and the records
of what was written (`EncodedFile`, `DecodedFile`). The library never prints: warnings (a
truncated source, clipped samples) are in the records. See docs/python-api.md.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Union

import torch

from lyra.codec.inference import decode_latents, encode_latents
from lyra.core.errors import LyraError

if TYPE_CHECKING:
    from lyra.audio.container import Header, Trailer
    from lyra.model.vae import VAE

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


def encode_file(model: VAE, fingerprint: str, src: str, dst: str, *, frames: int, stream: bool, dtype: str,
                downmix: bool, progress: Optional[ProgressCallback], quantizers: Optional[int] = None) -> EncodedFile:
    """`Codec.encode_file` for `model` (of `fingerprint`), streamed in chunks of `frames`
    latent frames; `dtype` already checked (a discrete model stores packed integer codes
    instead, `quantizers` rows of them)."""
    from lyra.audio.channels import check_channels
    from lyra.audio.container import LatentWriter
    from lyra.audio.reading import conform, load_audio, open_audio
    from lyra.core.atomic import atomic_write

    cfg, report = model.config, _reporter(progress)
    rows = model.bottleneck.check_quantizers(quantizers)   # before any work

    def header(source_rate: int, source_channels: int) -> Header:
        return latent_header(model, fingerprint, dtype, source_rate, source_channels, rows)

    if not stream:
        x, info = load_audio(src, cfg.sample_rate, cfg.channels, downmix)   # [C, T]
        seconds = x.shape[-1] / cfg.sample_rate
        report(0.0, seconds)
        mean = encode_latents(model, x[None], quantizers)[0]             # [1, C, T] -> [D, F] (or codes [Q, F])
        report(seconds, seconds)
        h = header(info.sample_rate, info.channels)
        return EncodedFile(dst, h, write_whole(dst, h, mean, x.shape[-1], info.frames), info.truncation)

    from lyra.codec.streaming import encode_stream

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
            for latents in encode_stream(model, counted(), frames, quantizers):   # [D, f] (or [Q, f]) each
                writer.write(latents)
                done = writer.frames * cfg.hop_length / cfg.sample_rate
                report(done if total is None else min(done, total), total)
            trailer = writer.finish(count[0], source.frames_read)
        seconds = count[0] / cfg.sample_rate
        report(seconds, seconds)
        return EncodedFile(dst, h, trailer, source.truncation)


def latent_header(model: VAE, fingerprint: str, dtype: str, source_rate: int, source_channels: int,
                  rows: Optional[int] = None) -> Header:
    """The `.lyra` header of `model` (of `fingerprint`): float latents stored as `dtype`, or a
    discrete model's integer codes, `rows` of them per frame (default all), with its bottleneck
    and options."""
    from lyra.audio.container import CODES, Header

    cfg, b = model.config, model.bottleneck
    codes = dict(codebook_size=b.codebook_size, num_quantizers=rows or b.num_quantizers) if model.discrete else {}
    return Header(cfg.sample_rate, cfg.channels, cfg.hop_length, cfg.latent_dim, CODES if model.discrete else dtype,
                  fingerprint, source_rate, source_channels, bottleneck=cfg.bottleneck,
                  bottleneck_options=dict(cfg.options.get(cfg.bottleneck, {})), **codes)


def write_whole(dst: str, header: Header, latents: torch.Tensor, samples: int, source_samples: int) -> Trailer:
    """Write `latents` ([D, F] floats or [Q, F] codes) as the `.lyra` file `dst` ("-": stdout),
    atomically; its trailer."""
    from lyra.audio.container import LatentWriter
    from lyra.core.atomic import atomic_write

    with atomic_write(dst) as f:
        writer = LatentWriter(f, header, _label(dst))
        writer.write(latents)
        return writer.finish(samples, source_samples)


def decode_file(model: VAE, check_header: Callable[[Header, str], None], src: str, dst: str, *, frames: int,
                stream: bool, original_rate: bool, original_channels: bool, format: Optional[str], subtype: str,
                progress: Optional[ProgressCallback]) -> DecodedFile:
    """`Codec.decode_file` for `model`, streamed in chunks of `frames` latent frames;
    `check_header(header, name)` refuses a file written by another model."""
    from lyra.audio.channels import mix_channels
    from lyra.audio.container import open_lyra, source_length
    from lyra.audio.overlap import crop_stream
    from lyra.audio.resample import resample, resample_stream
    from lyra.audio.writing import AudioWriter
    from lyra.codec.streaming import decode_stream

    report = _reporter(progress)
    with open_lyra(src) as reader:
        h = reader.header
        check_header(h, src)
        rate = h.source_sample_rate if original_rate else h.sample_rate
        mono = original_channels and h.source_channels != h.channels
        if mono and h.source_channels != 1:
            raise LyraError(f"{src}: its source had {h.source_channels} channels, mixed down when encoded; "
                            "--original-channels cannot restore them")
        channels = 1 if mono else h.channels

        if not stream:
            z = reader.read_all()                                                # [D, F] (or codes [Q, F])
            seconds = reader.trailer.num_samples / h.sample_rate
            report(0.0, seconds)
            audio = decode_latents(model, z[None], reader.trailer.num_samples)[0]   # [1, D, F] -> [C, T]
            check_decoded(audio, _label(dst))                                    # before any output
            if mono:
                audio = mix_channels(audio, 1, downmix=True)                     # [C, T] -> [1, T]
            if original_rate:
                n = source_length(h, reader.trailer, src)                      # checked before resampling
                audio = resample(audio, h.sample_rate, rate, src)[..., :n]
            with AudioWriter(dst, rate, channels, subtype, format, frames=audio.shape[-1]) as writer:
                writer.write(audio)
            report(seconds, seconds)
            return DecodedFile(dst, writer.written, rate, channels, writer.clipped)

        total = _estimated_seconds(src, h)
        done = [0]

        def counted(blocks: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
            report(0.0, total)
            for block in blocks:                                                 # [C, n] at the model's rate
                check_decoded(block, _label(dst), done[0])       # the writer then leaves nothing behind
                done[0] += block.shape[-1]
                seconds = done[0] / h.sample_rate
                report(seconds if total is None else min(seconds, total), total)
                yield mix_channels(block, 1, downmix=True) if mono else block    # [C, n] -> [1, n]

        blocks = counted(decode_stream(model, reader, frames, length=lambda: reader.trailer.num_samples))
        if original_rate:
            slack = math.ceil(h.source_sample_rate / h.sample_rate) + 1
            blocks = crop_stream(resample_stream(blocks, h.sample_rate, rate),
                                 lambda: source_length(h, reader.trailer, src), slack)
        with AudioWriter(dst, rate, channels, subtype, format) as writer:
            for block in blocks:
                writer.write(block)
        seconds = done[0] / h.sample_rate
        report(seconds, seconds)
        return DecodedFile(dst, writer.written, rate, channels, writer.clipped)


def check_decoded(audio: torch.Tensor, name: str, start: int = 0) -> None:
    """Refuse decoded audio ([C, n] or [B, C, n], samples `start`.. of the signal) holding NaN or
    infinity: a model with damaged (non-finite or overflowing) weights gives it, and a PCM file
    would silently hold -1 or clipped samples instead."""
    bad = ~torch.isfinite(audio)
    if bad.any():
        at = start + int(bad.flatten(0, -2).any(0).nonzero()[0])
        raise LyraError(f"{name}: decoded audio is not finite (NaN or infinity from sample {at}): the model "
                        "is broken (are its weights damaged?)")


def _reporter(progress: Optional[ProgressCallback]) -> ProgressCallback:
    return progress if progress is not None else (lambda done, total: None)


def _label(path: str) -> str:
    return "<stdout>" if path == "-" else path


def _estimated_seconds(src: str, header: Header) -> Optional[float]:
    """Seconds of audio a regular `.lyra` file holds, from its size (chunk overheads make it a
    slight overestimate); None for a stream."""
    if src == "-":
        return None
    try:
        info = os.stat(src)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    frames = info.st_size * 8 // max(1, header.bits_per_frame)
    return frames * header.hop_length / header.sample_rate
