"""The streaming codec (`lyra.streaming`) on a long input, in seconds of audio per second.

Streamed encode of `stream_seconds` of stereo audio into posterior means, and streamed decode
of the latents of that length, in the CLI's default chunks (`CHUNK_SECONDS`, plus the
model's receptive field of context on each side). The input arrives in 1-second blocks that
are views of one buffer, and the outputs are counted and dropped, so the peak memory is the
codec's own: it stays bounded by one segment whatever the input's length.

The compiled variants are skipped: `lyra.streaming` measures the model's receptive field on
every call with forward hooks on its convolutions, and dynamo guards on those hooks, so
compiled blocks recompile on each call until they hit dynamo's recompile limit (and would
then run eager). The codec CLI does not compile the model either.
"""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import harness
from benchmarks.variants import MODULE_VARIANTS, Variant, build_vae, require
from lyra.streaming import decode_stream, encode_stream

CHUNK_SECONDS = 10.0  # `lyra encode/decode --stream`'s default --chunk-seconds
ROUNDS = 5


def _require(variant: Variant, device: torch.device) -> None:
    require(variant, device)
    if variant.compiled:
        pytest.skip(f"{variant.name}: lyra.streaming's receptive-field probe (forward hooks, every call) "
                    "makes compiled blocks recompile past dynamo's limit; the codec does not compile")


def _setup(sizes, variant, device):
    model = build_vae(sizes.model, variant, device).eval()
    cfg = sizes.model
    length = int(sizes.stream_seconds * cfg.sample_rate)
    chunk_frames = max(1, round(CHUNK_SECONDS * cfg.frame_rate))
    return model, cfg, length, chunk_frames


def _blocks(buffer: torch.Tensor, total: int, block: int):
    """`total` samples of `buffer` ([C, >= block]) as [C, n] views, `block` at a time."""
    for start in range(0, total, block):
        yield buffer[:, :min(block, total - start)]


@pytest.mark.parametrize("variant", MODULE_VARIANTS, ids=lambda v: v.name)
def test_stream_encode(benchmark, variant, bench_sizes, device, bench_session):
    _require(variant, device)
    model, cfg, length, chunk_frames = _setup(bench_sizes, variant, device)
    block = cfg.sample_rate  # one second
    audio = 0.1 * torch.randn(cfg.channels, block, generator=torch.Generator().manual_seed(1))

    def encode() -> int:
        frames = 0
        for latents in encode_stream(model, _blocks(audio, length, block), chunk_frames):
            assert torch.isfinite(latents).all(), "non-finite latents"
            frames += latents.shape[-1]
        assert frames == math.ceil(length / cfg.hop_length), f"streamed {frames} frames"
        return frames

    harness.run(
        benchmark, encode, group=f"stream encode {bench_sizes.stream_seconds:g} s", variant=variant,
        work=harness.Work(length / cfg.sample_rate, "audio s/s"), session=bench_session,
        rounds=ROUNDS, info={"chunk_frames": chunk_frames},
    )


@pytest.mark.parametrize("variant", MODULE_VARIANTS, ids=lambda v: v.name)
def test_stream_decode(benchmark, variant, bench_sizes, device, bench_session):
    _require(variant, device)
    model, cfg, length, chunk_frames = _setup(bench_sizes, variant, device)
    frames = math.ceil(length / cfg.hop_length)
    block = 32  # latent frames per pushed block
    latents = torch.randn(cfg.latent_dim, block, generator=torch.Generator().manual_seed(2))

    def decode() -> int:
        samples = 0
        for audio in decode_stream(model, _blocks(latents, frames, block), chunk_frames, length=length):
            assert torch.isfinite(audio).all(), "non-finite audio"
            samples += audio.shape[-1]
        assert samples == length, f"streamed {samples} samples, expected {length}"
        return samples

    harness.run(
        benchmark, decode, group=f"stream decode {bench_sizes.stream_seconds:g} s", variant=variant,
        work=harness.Work(length / cfg.sample_rate, "audio s/s"), session=bench_session,
        rounds=ROUNDS, info={"chunk_frames": chunk_frames},
    )
