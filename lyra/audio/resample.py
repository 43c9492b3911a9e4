"""Resampling with torchaudio's sinc resampler, whole or streamed block by block (the stream's
concatenation equals resampling the whole)."""

from __future__ import annotations

import math
from typing import Iterator

import torch

from lyra.audio.overlap import Context, OverlapStream, run_stream
from lyra.core.errors import LyraError

# The resampler's polyphase kernel is [new', 1, orig' + 2*width] for coprime orig':new'; cap it.
_MAX_RESAMPLE_KERNEL = 1 << 25


def resampled_length(length: int, orig: int, new: int) -> int:
    """Samples `resample` returns for `length` input samples."""
    g = math.gcd(orig, new)
    return math.ceil(length * (new // g) / (orig // g))


def resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """[..., T] at `orig` Hz -> [..., resampled_length(T)] at `new` Hz (torchaudio's sinc)."""
    if orig == new:
        return x
    import torchaudio.functional

    _check_ratio(orig, new)
    return torchaudio.functional.resample(x, orig, new)


def resample_stream(blocks: Iterator[torch.Tensor], orig: int, new: int) -> Iterator[torch.Tensor]:
    """`resample` over a stream of [C, n] blocks; the concatenation equals resampling the whole.

    torchaudio's resampler is a polyphase filter: with g = gcd, each group of new/g outputs
    depends on one group of orig/g inputs plus `width` samples either side, so groups are the
    steps of an `OverlapStream`.
    """
    if orig == new:
        yield from blocks
        return
    _check_ratio(orig, new)
    g = math.gcd(orig, new)
    in_step, out_step = orig // g, new // g
    steps = math.ceil(_resample_width(in_step, out_step) / in_step)
    chunk = max(1, math.ceil(orig / in_step))   # about one second of input per segment

    def run(segment: torch.Tensor, keep: slice) -> torch.Tensor:
        # [C, n * in_step] (the last segment: any length) -> [C, n * out_step]; the steps in `keep`
        stop = None if keep.stop is None else keep.stop * out_step
        return resample(segment, orig, new)[..., keep.start * out_step:stop]

    stream = OverlapStream(run, in_step, Context(steps, steps), chunk)
    yield from run_stream(stream, blocks)


def _resample_width(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> int:
    """torchaudio's sinc kernel half-width in input samples (for coprime orig:new)."""
    return math.ceil(lowpass_filter_width * orig / (min(orig, new) * rolloff))


def _check_ratio(orig: int, new: int) -> None:
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    if n * (o + 2 * _resample_width(o, n)) > _MAX_RESAMPLE_KERNEL:
        raise LyraError(f"cannot resample {orig} Hz to {new} Hz: the rates' ratio ({o}:{n}) is too irregular")
