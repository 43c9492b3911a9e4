"""The whole model: encode, decode, and one training step, in seconds of audio per second.

- encode: ``VAE.encode`` of `batch` clips of `samples` samples, without autograd;
- decode: ``VAE.decode`` of their latents (``samples / hop`` frames), without autograd;
- train step: forward (encode, reparameterised sample, decode), the loss, backward, an AdamW
  step and ``zero_grad(set_to_none=True)``, on `train_batch` crops of `train_samples`, with a
  validation pass (``no_grad`` encode + decode of a batch of another size, in eval mode)
  between every two steps, as `lyra train` interleaves them: a compiled variant must survive
  the switch without recompiling past dynamo's limit (the suite makes that an error). Two
  losses: ``l1`` (L1 waveform + KL: the model's own cost) and ``stft`` (the multi-resolution
  STFT loss + KL that `lyra train` uses; `lyra.eval.stft`, in float32, not compiled). Precision:
  float32, and bf16 autocast around the model (AMP) where the device has native bf16.

Every variant is checked against the eager model with the same weights before it is timed.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import harness
from benchmarks.variants import EAGER, MODEL_VARIANTS, build_vae, require
from lyra.codec.inference import native_precision
from lyra.eval.stft import MultiResolutionSTFTLoss
from lyra.train.losses.kl import kl_divergence

KL_WEIGHT = 1e-4
PRECISIONS = ("fp32", "amp_bf16")
LOSSES = ("l1", "stft")


def _audio(batch, samples, cfg, device, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(batch, cfg.channels, samples, generator=gen)).to(device)


def _models(sizes, variant, device):
    """(the variant's model, the eager model with the same weights)."""
    model = build_vae(sizes.model, variant, device)
    reference = build_vae(sizes.model, EAGER, device)
    reference.load_state_dict(model.state_dict())
    return model, reference


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=lambda v: v.name)
def test_encode(benchmark, variant, bench_sizes, device, bench_session):
    require(variant, device)
    model, reference = _models(bench_sizes, variant, device)
    model.eval(), reference.eval()
    x = _audio(bench_sizes.batch, bench_sizes.samples, bench_sizes.model, device)

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


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=lambda v: v.name)
def test_decode(benchmark, variant, bench_sizes, device, bench_session):
    require(variant, device)
    model, reference = _models(bench_sizes, variant, device)
    model.eval(), reference.eval()
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


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=lambda v: v.name)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_train_step(benchmark, loss, precision, variant, bench_sizes, device, bench_session):
    require(variant, device)
    if precision == "amp_bf16" and not native_precision(device, torch.bfloat16):
        pytest.skip(f"amp_bf16: this {device.type} has no native bf16 convolutions")
    cfg = bench_sizes.model
    model, reference = _models(bench_sizes, variant, device)
    x = _audio(bench_sizes.train_batch, bench_sizes.train_samples, cfg, device)
    val = _audio(bench_sizes.train_batch + 1, bench_sizes.train_samples, cfg, device, seed=4)
    stft = MultiResolutionSTFTLoss().to(device)
    amp = precision == "amp_bf16"

    def loss_of(net, generator=None):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y, mean, logvar = net(x, generator)
        y = y.float()
        recon = stft(y, x) if loss == "stft" else (y - x).abs().mean()
        return recon + KL_WEIGHT * kl_divergence(mean, logvar)

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

    def validate():
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model.decode(model.encode(val)[0])
        model.train()

    harness.run(
        benchmark, step, group=f"train step {loss} {precision}", variant=variant,
        work=harness.Work(bench_sizes.train_seconds, "audio s/s"), session=bench_session,
        rounds=bench_sizes.rounds, info={"precision": precision, "loss": loss}, between=validate,
    )
    assert all(torch.isfinite(v).item() for v in losses), f"non-finite training loss ({variant.name})"
