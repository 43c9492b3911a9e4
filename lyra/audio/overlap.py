"""The overlap engine: a local operator applied to an endless stream in overlapping segments.

An operator is *local* when each output depends only on inputs near it: a convolutional
encoder or decoder, a polyphase resampler. Such an operator can run on a stream of any length
in constant memory by cutting the stream into segments that overlap by the operator's
context, running the operator on each segment, and keeping only the outputs whose inputs the
segment held in full:

    input   |<- left ctx ->|<------ core: N steps ------>|<- right ctx ->|
    output                 |<- kept: the core's outputs ->|

Everything is counted in *steps*: one output step consumes `in_step` input samples (a hop of
audio per latent frame for the encoder; one latent frame per step for the decoder; a group of
samples for a resampler). Segment boundaries fall on whole steps, so a strided operator stays
in phase with the whole-signal computation, and a segment that starts at the beginning of the
stream, or ends at its end, sees exactly the edges the whole-signal pass sees. The
concatenated outputs therefore equal the whole-signal outputs up to float rounding.

This module knows nothing of the model: `lyra.codec.streaming` measures the codec's context and
builds its streams on top of it, and `lyra.audio.resample` streams its resampler through it.

    stream = OverlapStream(fn, in_step=8, context=Context(3, 3), chunk=100)
    for out in run_stream(stream, blocks): ...          # blocks: [..., n] tensors
    for out in crop_stream(outputs, length=T, slack=8): ...   # cut the total to T samples
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from lyra.core.errors import LyraError


@dataclass(frozen=True)
class Context:
    """How far outputs depend on inputs beyond the span they cover, on each side (in steps)."""

    left: int
    right: int


class OverlapStream:
    """Apply a local, step-aligned operator to a stream in overlapping segments.

    ``fn(segment, keep)`` runs the operator on a segment of ``n * in_step`` input samples
    (last axis; the final segment may be any length: it ends where the signal ends) and
    returns its outputs for the output steps `keep` (a `slice` relative to the segment's
    first output step; ``keep.stop`` is None on the final segment: everything to the end).
    `context` is in steps; `chunk` is the number of output steps per segment (the "core").
    `push` blocks of any size, then `finish`.
    """

    def __init__(self, fn: Callable[[torch.Tensor, slice], torch.Tensor], in_step: int,
                 context: Context, chunk: int) -> None:
        if chunk < 1:
            raise LyraError(f"chunk must be at least one step, got {chunk}")
        self.fn, self.in_step = fn, in_step
        self.context, self.chunk = context, chunk
        self._pieces: list[torch.Tensor] = []   # buffered input, starting at self._start
        self._buffered = 0
        self._start = 0                          # absolute input index of the buffer (step-aligned)
        self._next = 0                           # next output step to emit
        self._finished = False

    @property
    def buffered(self) -> int:
        """Input samples held right now (bounded by one segment plus one pushed block)."""
        return self._buffered

    def push(self, block: torch.Tensor) -> Iterator[torch.Tensor]:
        """Add input; yield every output chunk that is now fully determined."""
        if self._finished:
            raise RuntimeError("push after finish")
        if block.shape[-1] == 0:
            return
        self._pieces.append(block)
        self._buffered += block.shape[-1]
        need = (self._next + self.chunk + self.context.right) * self.in_step  # input end required
        while self._start + self._buffered >= need:
            yield self._run(need, self.chunk)
            self._next += self.chunk
            self._drop_before(max(0, self._next - self.context.left) * self.in_step)
            need = (self._next + self.chunk + self.context.right) * self.in_step

    def finish(self) -> Iterator[torch.Tensor]:
        """The input has ended: yield the outputs that remain."""
        self._finished = True
        end = self._start + self._buffered
        if end > self._next * self.in_step:
            yield self._run(end, None)
        self._pieces, self._buffered = [], 0

    def _run(self, end: int, steps: int | None) -> torch.Tensor:
        first = max(0, self._next - self.context.left)                     # segment's first step
        buffer = torch.cat(self._pieces, dim=-1) if len(self._pieces) > 1 else self._pieces[0]
        self._pieces = [buffer]
        segment = buffer[..., first * self.in_step - self._start:end - self._start]
        offset = self._next - first
        return self.fn(segment, slice(offset, None if steps is None else offset + steps))

    def _drop_before(self, index: int) -> None:
        buffer = self._pieces[0]                  # _run left one piece
        cut = index - self._start
        if cut > 0:
            # A view: the next push's torch.cat copies it into a fresh, compact buffer.
            self._pieces = [buffer[..., cut:]]
            self._buffered -= cut
            self._start = index


def run_stream(stream: OverlapStream, blocks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Feed every block to `stream`, then finish it; yield the outputs in order."""
    for block in blocks:
        yield from stream.push(block)
    yield from stream.finish()


def crop_stream(blocks: Iterable[torch.Tensor], length: int | Callable[[], int] | None,
                slack: int) -> Iterator[torch.Tensor]:
    """Pass [..., n] blocks through, cutting the total to `length` samples.

    `length` may be a callable, asked only once the blocks are exhausted; until then the last
    `slack` samples (at least the most the total can exceed `length` by) are held back.
    """
    pending: list[torch.Tensor] = []
    held = done = 0
    for block in blocks:
        pending.append(block)
        held += block.shape[-1]
        if held > slack:
            joined = torch.cat(pending, dim=-1)
            yield joined[..., :held - slack]
            done += held - slack
            pending, held = [joined[..., held - slack:]], slack
    total = length() if callable(length) else length
    tail = torch.cat(pending, dim=-1) if pending else None
    if total is None:
        if tail is not None and tail.shape[-1]:
            yield tail
        return
    if not done <= total <= done + held:
        raise LyraError(f"decoded {done + held} samples, cannot crop them to {total}")
    if total > done:
        yield tail[..., :total - done]
