"""The whole model: encode, decode, and one training step, in seconds of audio per second.

- encode: ``VAE.encode`` of `batch` clips of `samples` samples, without autograd;
- decode: ``VAE.decode`` of their latents (``samples / hop`` frames), without autograd;
- train step: forward (``VAE.forward``: encode, reparameterised sample, decode), the training
  loss (`lyra.loss`: multi-resolution STFT reconstruction + weighted KL, in float32),
  backward, an AdamW step and ``zero_grad(set_to_none=True)``; in float32 and with AMP
  (bf16 autocast around the model's forward, on CUDA and CPU alike; bf16 needs no grad
  scaler).

Every variant is checked against the eager model with the same weights before it is timed.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import harness
from benchmarks.variants import EAGER, MODULE_VARIANTS, build_vae, require
from lyra.loss import MultiResolutionSTFTLoss, kl_divergence

KL_WEIGHT = 1e-4
PRECISIONS = ("fp32", "amp_bf16")


def _audio(sizes, device):
    gen = torch.Generator().manual_seed(1)
    return (0.1 * torch.randn(sizes.batch, sizes.model.channels, sizes.samples, generator=gen)).to(device)


def _models(sizes, variant, device):
    """(the variant's model, the eager model with the same weights)."""
    model = build_vae(sizes.model, variant, device)
    reference = build_vae(sizes.model, EAGER, device)
    reference.load_state_dict(model.state_dict())
    return model, reference


@pytest.mark.parametrize("variant", MODULE_VARIANTS, ids=lambda v: v.name)
def test_encode(benchmark, variant, bench_sizes, device, bench_session):
    require(variant, device)
    model, reference = _models(bench_sizes, variant, device)
    x = _audio(bench_sizes, device)

    def encode():
        with torch.no_grad():
            return model.encode(x)

    with torch.no_grad():
        harness.check_matches(encode()[0], reference.encode(x)[0], harness.matmul_tolerance(device),
                              f"encode mean ({variant.name})")
    del reference
    harness.run(
        benchmark, encode, group="model encode", variant=variant,
        work=harness.Work(bench_sizes.audio_seconds, "audio s/s"), session=bench_session,
        rounds=bench_sizes.rounds,
    )


@pytest.mark.parametrize("variant", MODULE_VARIANTS, ids=lambda v: v.name)
def test_decode(benchmark, variant, bench_sizes, device, bench_session):
    require(variant, device)
    model, reference = _models(bench_sizes, variant, device)
    cfg = bench_sizes.model
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(bench_sizes.batch, cfg.latent_dim, bench_sizes.samples // cfg.hop_length, generator=gen).to(device)

    def decode():
        with torch.no_grad():
            return model.decode(z)

    with torch.no_grad():
        harness.check_matches(decode(), reference.decode(z), harness.matmul_tolerance(device),
                              f"decode ({variant.name})")
    del reference
    harness.run(
        benchmark, decode, group="model decode", variant=variant,
        work=harness.Work(bench_sizes.audio_seconds, "audio s/s"), session=bench_session,
        rounds=bench_sizes.rounds,
    )


def _noise(device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(3)


@pytest.mark.parametrize("variant", MODULE_VARIANTS, ids=lambda v: v.name)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_train_step(benchmark, precision, variant, bench_sizes, device, bench_session):
    require(variant, device)
    model, reference = _models(bench_sizes, variant, device)
    x = _audio(bench_sizes, device)
    loss_fn = MultiResolutionSTFTLoss().to(device)
    amp = precision == "amp_bf16"

    def loss_of(net, generator=None):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y, mean, logvar = net(x, generator)
        return loss_fn(y, x) + KL_WEIGHT * kl_divergence(mean, logvar)

    # Same weights, same input, same noise: the variant's first loss is the eager one.
    tol = 2e-2 if amp else harness.matmul_tolerance(device)
    harness.check_matches(loss_of(model, _noise(device)), loss_of(reference, _noise(device)), tol,
                          f"train loss ({variant.name})")
    del reference

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []

    def step():
        loss = loss_of(model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    harness.run(
        benchmark, step, group=f"train step {precision}", variant=variant,
        work=harness.Work(bench_sizes.audio_seconds, "audio s/s"), session=bench_session,
        rounds=bench_sizes.rounds, info={"precision": precision},
    )
    assert all(torch.isfinite(v).item() for v in losses), f"non-finite training loss ({variant.name})"
