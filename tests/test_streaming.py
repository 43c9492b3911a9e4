"""Chunked encode/decode: the receptive field, streamed == offline, bounded memory."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import lyra
import lyra.model.blocks
from lyra import registry
from lyra.model.config import ModelConfig
from lyra.audio.overlap import Context, OverlapStream, crop_stream, run_stream
from lyra.codec.streaming import (StagedDecoder, decode_stream, decoder_context, encode_stream, encoder_context,
                            receptive_field)

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def tiny_model(seed: int = 0) -> lyra.VAE:
    """Hop 8, but the full dilations: a receptive field of dozens of frames, cheap per frame."""
    torch.manual_seed(seed)
    return lyra.build_model(ModelConfig.small(strides=(2, 2, 2), c_mults=(1, 2, 2))).eval()


@pytest.fixture(scope="module")
def tiny() -> lyra.VAE:
    return tiny_model()


@pytest.fixture(scope="module")
def small() -> lyra.VAE:
    torch.manual_seed(1)
    return lyra.build_model(ModelConfig.small()).eval()


def random_splits(x: torch.Tensor, gen: torch.Generator, low: int, high: int) -> list[torch.Tensor]:
    sizes, total = [], x.shape[-1]
    while sum(sizes) < total:
        sizes.append(min(int(torch.randint(low, high, (1,), generator=gen)), total - sum(sizes)))
    return list(x.split(sizes, dim=-1))


# ---------------------------------------------------------------------------------------
# Receptive field
# ---------------------------------------------------------------------------------------
def gradient_extent(grad: torch.Tensor) -> tuple[int, int]:
    """First and last index along the last axis where a gradient is non-zero."""
    nz = (grad.abs().sum(dim=tuple(range(grad.dim() - 1))) > 0).nonzero()
    return int(nz.min()), int(nz.max())


def test_encoder_receptive_field_equals_a_gradient_probe(tiny):
    hop, frame, T = tiny.hop_length, 100, 200 * tiny.hop_length
    x = torch.randn(1, 2, T, requires_grad=True)
    mean, _ = tiny.encode(x)
    mean[0, :, frame].sum().backward()
    first, last = gradient_extent(x.grad)
    left, right = receptive_field(tiny.encoder, torch.zeros(1, 2, 2 * hop), "input")
    assert (left, right) == (frame * hop - first, last - ((frame + 1) * hop - 1))
    ctx = encoder_context(tiny)
    assert ctx == Context(-(-left // hop), -(-right // hop))


def test_decoder_receptive_field_bounds_a_gradient_probe(tiny):
    hop, frame = tiny.hop_length, 100
    z = torch.randn(1, 16, 200, requires_grad=True)
    tiny.decode(z)[0, :, frame * hop:(frame + 1) * hop].sum().backward()
    first, last = gradient_extent(z.grad)
    ctx = decoder_context(tiny)
    # an upper bound (safe), and tight to within one frame
    assert frame - first <= ctx.left <= frame - first + 1
    assert last - frame <= ctx.right <= last - frame + 1


def test_receptive_field_comes_from_the_model_not_a_constant():
    wide = lyra.build_model(ModelConfig.small(strides=(2, 2, 2), c_mults=(1, 2, 2), dilations=(1, 3, 9, 27)))
    narrow = lyra.build_model(ModelConfig.small(strides=(2, 2, 2), c_mults=(1, 2, 2), dilations=(1,)))
    assert encoder_context(wide).left > encoder_context(tiny_model()).left > encoder_context(narrow).left
    assert decoder_context(wide).right > decoder_context(narrow).right


def test_unknown_time_mixing_layers_are_refused():
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 2, 3, padding=1), torch.nn.AvgPool1d(2))
    with pytest.raises(lyra.LyraError, match=r"Sequential\.1 is a AvgPool1d, which is not known to be local in time"):
        receptive_field(net, torch.zeros(1, 2, 16), "input")


@pytest.fixture
def scratch_registry():
    saved = registry.REGISTRY.snapshot()
    yield registry
    registry.REGISTRY.restore(saved)


class GroupNormSnake(torch.nn.Module):
    """Normalises over time: a chunk's statistics differ from the whole signal's."""

    def __init__(self, channels: int, **_) -> None:
        super().__init__()
        self.norm = torch.nn.GroupNorm(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class BareConvActivation(torch.nn.Module):
    """Filters in time with a bare F.conv1d that no hook sees."""

    def __init__(self, channels: int, **_) -> None:
        super().__init__()
        self.register_buffer("taps", torch.ones(channels, 1, 5) / 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv1d(x, self.taps, padding=2, groups=x.shape[1])


class ShiftedConv(torch.nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.roll(x, 3, dims=-1))


def test_streaming_refuses_what_it_cannot_vouch_for(scratch_registry, tiny):
    """An allow-list, not a deny-list: a component must be registered streamable, and even then
    a torch layer inside it that mixes time on its own (GroupNorm) refuses the model; so does a
    convolution whose forward is not the one streaming measures."""
    config = ModelConfig.small(strides=(2, 2, 2), c_mults=(1, 2, 2))
    scratch_registry.register("activation", "bare_conv", BareConvActivation)           # not streamable
    scratch_registry.register("activation", "norm_snake", GroupNormSnake, streamable=True)
    x = torch.randn(2, 50 * tiny.hop_length)

    model = lyra.build_model(dataclasses.replace(config, activation="bare_conv")).eval()
    with pytest.raises(lyra.LyraError, match=r"^cannot stream this model: activation 'bare_conv' \(.*\) at "
                                            r"Encoder\.blocks\.0\.res\.0\.act1 is not registered as streamable"):
        list(encode_stream(model, [x], 7))
    model = lyra.build_model(dataclasses.replace(config, activation="norm_snake")).eval()
    with pytest.raises(lyra.LyraError, match=r"Encoder\.blocks\.0\.res\.0\.act1\.norm is a GroupNorm, which is "
                                            r"not known to be local in time; encode/decode without --stream$"):
        list(encode_stream(model, [x], 7))
    net = torch.nn.Sequential(ShiftedConv(2, 2, 3, padding=1))
    with pytest.raises(lyra.LyraError, match=r"Sequential\.0 is a ShiftedConv"):
        receptive_field(net, torch.zeros(1, 2, 16), "input")
    # Registered streamable and made only of what streaming knows: accepted.
    scratch_registry.register("activation", "snake_too", lyra.model.blocks.Snake, streamable=True)
    model = lyra.build_model(dataclasses.replace(config, activation="snake_too")).eval()
    assert torch.cat(list(encode_stream(model, [x], 7)), dim=-1).shape[-1] == 50


def test_the_streaming_plan_is_measured_once_per_model(tiny, monkeypatch):
    """Streaming does not run the model with hooks on every call (that would make compiled
    stages recompile): the plan is measured on first use and kept."""
    import lyra.codec.streaming as streaming

    model = tiny_model(seed=3)
    calls = []
    measure = streaming._measure
    monkeypatch.setattr(streaming, "_measure", lambda m: calls.append(1) or measure(m))
    x = torch.randn(2, 30 * model.hop_length)
    for _ in range(3):
        z = torch.cat(list(encode_stream(model, [x], 7)), dim=-1)
        list(decode_stream(model, [z], 7))
    assert len(calls) == 1
    assert streaming.streaming_plan(model) is streaming.streaming_plan(model)


# ---------------------------------------------------------------------------------------
# Streamed == offline
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [9, 16, 64])
def test_streamed_equals_offline_on_a_signal_many_chunks_long(tiny, chunk):
    gen = torch.Generator().manual_seed(chunk)
    hop = tiny.hop_length
    T = 301 * hop + 3                                   # not a multiple of the hop nor of the chunk
    x = torch.randn(2, T, generator=gen).clamp(-3, 3) / 3   # unit-scale audio
    with torch.inference_mode():
        mean, _ = tiny.encode(x[None])
        audio = tiny.decode(mean, T)[0]
    frames = mean.shape[-1]
    assert frames % chunk != 0 and frames > 2 * chunk + 2 * decoder_context(tiny).left

    z = torch.cat(list(encode_stream(tiny, random_splits(x, gen, 1, 300), chunk)), dim=-1)
    assert z.shape == mean[0].shape
    assert (z - mean[0]).abs().max() <= TOL

    y = torch.cat(list(decode_stream(tiny, random_splits(mean[0], gen, 1, 40), chunk, T)), dim=-1)
    assert y.shape == audio.shape
    assert (y - audio).abs().max() <= TOL


def test_streamed_equals_offline_at_the_real_hop(small):
    """The small model has the default hop (2048) and receptive field (8 / 48 frames)."""
    gen = torch.Generator().manual_seed(7)
    hop = small.hop_length
    T = 29 * hop + 1234
    x = torch.randn(2, T, generator=gen).clamp(-3, 3) / 3
    with torch.inference_mode():
        mean, _ = small.encode(x[None])
    z = torch.cat(list(encode_stream(small, random_splits(x, gen, 5000, 50000), 4)), dim=-1)
    assert (z - mean[0]).abs().max() <= TOL             # 8 chunks, interior ones with both contexts

    latents = torch.randn(16, 110, generator=gen) * 0.2
    with torch.inference_mode():
        audio = small.decode(latents[None], 110 * hop - 77)[0]
    y = torch.cat(list(decode_stream(small, latents.split(9, dim=-1), 7, 110 * hop - 77)), dim=-1)
    assert y.shape == audio.shape
    assert (y - audio).abs().max() <= TOL


def test_too_little_context_breaks_equality(tiny):
    """The equality tests are sensitive: without the receptive field as overlap they fail."""
    x = torch.randn(2, 200 * tiny.hop_length)
    with torch.inference_mode():
        mean, _ = tiny.encode(x[None])

    def encode(segment, keep):
        with torch.inference_mode():
            return tiny.encode(segment[None])[0][0, :, keep]

    z = torch.cat(list(run_stream(OverlapStream(encode, tiny.hop_length, Context(0, 0), 10), [x])), dim=-1)
    assert (z - mean[0]).abs().max() > 1e-3


def test_staged_decoder_crops_and_still_matches(tiny):
    staged = StagedDecoder(tiny)
    assert len(staged.stages) == 2 + len(tiny.decoder.blocks)   # conv_in, blocks, head
    assert staged.needs[0].left > staged.needs[-2].left >= staged.needs[-1].left == 0
    z = torch.randn(16, 180)
    with torch.inference_mode():
        ref = tiny.decode(z[None])[0]
    hop = tiny.hop_length
    out = staged(z, slice(80, 100))
    assert (out - ref[:, 80 * hop:100 * hop]).abs().max() <= TOL


def test_encoding_is_deterministic(tiny):
    x = torch.randn(2, 50 * tiny.hop_length)
    a = torch.cat(list(encode_stream(tiny, [x], 7)), dim=-1)
    b = torch.cat(list(encode_stream(tiny, [x.clone()], 7)), dim=-1)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------
# Memory and the stream plumbing
# ---------------------------------------------------------------------------------------
def test_buffer_stays_bounded_however_long_the_stream():
    """An hour of 'audio' through an OverlapStream never holds more than one segment + block."""
    step, ctx, chunk, block = 2048, Context(8, 48), 215, 65536

    def keep_every_step(segment, keep):       # output: one value per step, the step's first sample
        return segment[..., ::step][..., keep]

    stream = OverlapStream(keep_every_step, step, ctx, chunk)
    bound = (ctx.left + chunk + ctx.right + 1) * step + block
    peak, emitted, total = 0, 0, 3600 * 44100
    for start in range(0, total, block):
        n = min(block, total - start)
        for out in stream.push(torch.arange(start, start + n, dtype=torch.float64)[None]):
            assert torch.equal(out[0], torch.arange(emitted, emitted + out.shape[-1], dtype=torch.float64) * step)
            emitted += out.shape[-1]
        peak = max(peak, stream.buffered)
    for out in stream.finish():
        emitted += out.shape[-1]
    assert emitted == -(-total // step)
    assert peak <= bound


def test_crop_stream_cuts_at_the_lazily_known_length():
    blocks = [torch.arange(0, 10), torch.arange(10, 25), torch.arange(25, 27)]
    known = {}
    out = crop_stream(iter(blocks), lambda: known["n"], slack=8)
    first = next(out)                              # something comes out before the length is known
    known["n"] = 21
    rest = torch.cat([first, *out])
    assert torch.equal(rest, torch.arange(21))
    with pytest.raises(lyra.LyraError, match="cannot crop"):
        list(crop_stream(iter(blocks), 40, slack=8))
