"""Resampling with torchaudio's sinc resampler, whole or streamed block by block (the stream's
concatenation equals resampling the whole), and the sample rates Lyra handles (1 Hz to
`MAX_SAMPLE_RATE`). Sizes are checked before anything is allocated: a whole resampling that
would grow a short input past `MAX_GROWN_VALUES` is refused."""

from __future__ import annotations

import math
from typing import Iterator

import torch

from lyra.audio.overlap import Context, OverlapStream, run_stream
from lyra.core.errors import LyraError
from lyra.core.limits import MAX_SAMPLE_RATE

# The resampler's polyphase kernel is [new', 1, orig' + 2*width] for coprime orig':new'; cap it.
_MAX_RESAMPLE_KERNEL = 1 << 25
# Upsampling makes a short input long. A whole resampling that grows its input more than
# MAX_GROWTH times (8 kHz -> 768 kHz is 96) is refused when its output would hold more than
# MAX_GROWN_VALUES values (1 GiB of float32); streamed resampling holds about a second at a time.
MAX_GROWTH = 96
MAX_GROWN_VALUES = 1 << 28


def check_sample_rate(rate: object, what: str) -> None:
    """Refuse (one line starting with `what`: a file name, or a key) a rate that is not an
    integer from 1 Hz to MAX_SAMPLE_RATE."""
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1 <= rate <= MAX_SAMPLE_RATE:
        shown = f"{rate} Hz" if isinstance(rate, int) and not isinstance(rate, bool) else repr(rate)
        raise LyraError(f"{what}: sample rate {shown} is not one Lyra handles (1 to {MAX_SAMPLE_RATE} Hz)")


def resampled_length(length: int, orig: int, new: int) -> int:
    """Samples `resample` returns for `length` input samples."""
    g = math.gcd(orig, new)
    return -(-length * (new // g) // (orig // g))        # the ceiling, in exact integers


def resample(x: torch.Tensor, orig: int, new: int, name: str | None = None) -> torch.Tensor:
    """[..., T] at `orig` Hz -> [..., resampled_length(T)] at `new` Hz (torchaudio's sinc).
    Errors (an irregular ratio, an output too large: `check_resample`) name `name` if given."""
    if orig == new:
        return x
    import torchaudio.functional

    check_resample(x.shape, orig, new, name)
    return torchaudio.functional.resample(x, orig, new)


def check_resample(shape: tuple[int, ...] | torch.Size, orig: int, new: int, name: str | None = None) -> None:
    """Refuse, before allocating anything, resampling audio of `shape` ([..., T]) from `orig`
    to `new` Hz when a rate is out of range, the ratio is too irregular, or the output would
    be a short input grown too large (see MAX_GROWN_VALUES); the line names `name` if given."""
    where = f"{name}: " if name else ""
    for rate in (orig, new):
        check_sample_rate(rate, name or "resampling")
    if orig == new:
        return
    _check_ratio(orig, new, where)
    length = shape[-1] if len(shape) else 0
    values = resampled_length(length, orig, new) * math.prod(shape[:-1])
    if new > MAX_GROWTH * orig and values > MAX_GROWN_VALUES:
        raise LyraError(f"{where}cannot resample {length:,} samples from {orig} Hz to {new} Hz: that would make "
                        f"{resampled_length(length, orig, new):,} samples per channel, {new / orig:,.0f} times as "
                        f"many (more than {MAX_GROWTH} times is refused beyond {MAX_GROWN_VALUES:,} values)")


def resample_stream(blocks: Iterator[torch.Tensor], orig: int, new: int) -> Iterator[torch.Tensor]:
    """`resample` over a stream of [C, n] blocks; the concatenation equals resampling the whole.

    torchaudio's resampler is a polyphase filter: with g = gcd, each group of new/g outputs
    depends on one group of orig/g inputs plus `width` samples either side, so groups are the
    steps of an `OverlapStream`.
    """
    if orig == new:
        yield from blocks
        return
    for rate in (orig, new):
        check_sample_rate(rate, "resampling")
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


def _check_ratio(orig: int, new: int, where: str = "") -> None:
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    if n * (o + 2 * _resample_width(o, n)) > _MAX_RESAMPLE_KERNEL:
        raise LyraError(f"{where}cannot resample {orig} Hz to {new} Hz: the rates' ratio ({o}:{n}) is too irregular")
