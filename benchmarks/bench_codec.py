"""The codec as `lyra encode/decode` runs it, in seconds of audio per second.

`codec_seconds` of synthetic voiced stereo audio (`lyra.audio.synth.voiced_clip`: harmonic
voices, formants, breath noise), encoded and decoded:

- whole file: ``model.encode`` / ``model.decode`` of the clip at once (what the CLI does
  without ``--stream``: memory grows with the length);
- streamed: `encode_stream` / `decode_stream` in the CLI's default 10 s chunks (plus the
  model's receptive field of context either side), the input arriving in 1 s blocks; memory
  stays bounded by one segment.

The shipped variants are built by `lyra.codec.inference.prepare_model`, the function behind the
CLI's ``--compile`` and ``--precision`` (see `benchmarks.variants`). Every variant's output is
compared with the eager variant's: fp32 variants must match within float32 rounding; for bf16
the SI-SDR of its output against the fp32 output is recorded (``si_sdr_vs_fp32_db`` in
extra_info), the cost in quality of reduced precision. The eager output of each kind is
computed once per session and kept, so the check costs one call per variant.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks import harness
from benchmarks.variants import CODEC_VARIANTS, Variant, build_codec, require
from lyra.codec.inference import decode_latents, encode_mean
from lyra.eval.metrics import si_sdr
from lyra.codec.streaming import decode_stream, encode_stream
from lyra.audio.synth import voiced_clip

CHUNK_SECONDS = 10.0  # `lyra encode/decode --stream`'s default --chunk-seconds
KINDS = ("encode", "decode", "stream encode", "stream decode")
_REFERENCE: dict[tuple[str, str], torch.Tensor] = {}  # (size, kind) -> the eager variant's output


def _audio(sizes) -> torch.Tensor:
    """[C, T] float32, the same every run."""
    clip = voiced_clip(np.random.default_rng(0), sizes.codec_seconds, sizes.model.sample_rate)
    return torch.from_numpy(clip[: sizes.model.channels]).float()


def _latents(sizes) -> torch.Tensor:
    """[D, F] posterior-mean-like latents to decode: the same every run."""
    frames = math.ceil(sizes.codec_seconds * sizes.model.sample_rate / sizes.model.hop_length)
    return torch.randn(sizes.model.latent_dim, frames, generator=torch.Generator().manual_seed(2))


def _call(kind: str, model, audio: torch.Tensor, latents: torch.Tensor, chunk_frames: int):
    """One codec call of `kind`, through the functions `lyra.Codec` (and so the CLI) calls;
    returns the output (float32, CPU)."""
    rate = model.config.sample_rate
    if kind == "encode":
        return encode_mean(model, audio[None])[0]                                        # [D, F]
    if kind == "decode":
        return decode_latents(model, latents[None])[0]                                   # [C, F * hop]
    if kind == "stream encode":
        return torch.cat(list(encode_stream(model, audio.split(rate, dim=-1), chunk_frames)), dim=-1)
    return torch.cat(list(decode_stream(model, latents.split(32, dim=-1), chunk_frames)), dim=-1)


@pytest.mark.parametrize("variant", CODEC_VARIANTS, ids=lambda v: v.label.replace(" ", "_"))
@pytest.mark.parametrize("kind", KINDS)
def test_codec(benchmark, kind, variant: Variant, bench_sizes, device, bench_session):
    require(variant, device)
    model = build_codec(bench_sizes.model, variant, device)
    audio, latents = _audio(bench_sizes), _latents(bench_sizes)
    chunk_frames = max(1, round(CHUNK_SECONDS * bench_sizes.model.frame_rate))

    out = _call(kind, model, audio, latents, chunk_frames)   # the warm-up (compilation) is this call
    assert torch.isfinite(out).all(), f"{kind} ({variant.label}): non-finite output"
    key = (bench_sizes.name, kind)
    if variant.name == "eager":
        _REFERENCE[key] = out
    info = {"kind": kind, "precision": variant.precision, "chunk_frames": chunk_frames}
    reference = _REFERENCE.get(key)
    if reference is not None and variant.precision == "fp32":
        harness.check_matches(out, reference, harness.matmul_tolerance(device), f"{kind} ({variant.label})")
    elif reference is not None:
        info["si_sdr_vs_fp32_db"] = float(si_sdr(reference[None], out[None]).mean())

    harness.run(
        benchmark, lambda: _call(kind, model, audio, latents, chunk_frames),
        group=f"codec {kind} {bench_sizes.codec_seconds:g} s", variant=variant,
        work=harness.Work(bench_sizes.codec_seconds, "audio s/s"), session=bench_session,
        rounds=bench_sizes.codec_rounds, warmup=0, warmup_rounds=0, info=info,
    )
