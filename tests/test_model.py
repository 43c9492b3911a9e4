"""The VAE: the default model's exact size and shapes, self-contained latents, compile parity."""

import math

import pytest
import torch

import lyra
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.vae import VAE, build_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def default_model() -> VAE:
    torch.manual_seed(0)
    return build_model().eval()


@pytest.fixture(scope="module")
def small_model() -> VAE:
    torch.manual_seed(0)
    return build_model(ModelConfig.small()).eval()


def test_default_model_has_exactly_the_documented_parameter_count(default_model):
    assert n_params(default_model) == 255_858_050
    assert default_model.hop_length == 2048
    assert math.isclose(default_model.config.frame_rate, 44100 / 2048)


def test_default_model_stage_shapes_match_the_design(default_model):
    """Encoder and decoder stage outputs, recorded with hooks, follow the design table."""
    T = 2 * 2048
    seen: list[tuple[str, list[int]]] = []
    names = [f"enc{i}" for i in range(5)] + [f"dec{i}" for i in range(5)]
    hooks = [
        block.register_forward_hook(lambda m, i, o, name=name: seen.append((name, list(o.shape))))
        for name, block in zip(names, [*default_model.encoder.blocks, *default_model.decoder.blocks])
    ]
    with torch.inference_mode():
        mean, logvar = default_model.encode(torch.randn(1, 2, T))
        y = default_model.decode(mean, T)
    for h in hooks:
        h.remove()
    F = T // 2048
    assert seen == [
        ("enc0", [1, 128, T // 2]), ("enc1", [1, 256, T // 8]), ("enc2", [1, 512, T // 32]),
        ("enc3", [1, 1024, T // 256]), ("enc4", [1, 2048, F]),
        ("dec0", [1, 1024, F * 8]), ("dec1", [1, 512, F * 64]), ("dec2", [1, 256, F * 256]),
        ("dec3", [1, 128, F * 1024]), ("dec4", [1, 128, F * 2048]),
    ]
    assert mean.shape == logvar.shape == (1, 64, F)
    assert y.shape == (1, 2, T)


@pytest.mark.parametrize("T", [1, 5, 2047, 2048, 2049, 3 * 2048 + 17])
def test_round_trip_returns_exactly_T_samples_with_ceil_frames(small_model, T):
    x = torch.randn(2, 2, T)
    with torch.inference_mode():
        mean, logvar = small_model.encode(x)
        assert mean.shape == logvar.shape == (2, 16, math.ceil(T / 2048))
        y = small_model.decode(small_model.sample(mean, logvar), T)
    assert y.shape == (2, 2, T)


def test_encode_equals_encoding_the_zero_padded_input(small_model):
    """Latents are self-contained: encode pads with zeros to a hop multiple, nothing else."""
    T = 2048 + 300
    x = torch.randn(1, 2, T)
    padded = torch.cat([x, torch.zeros(1, 2, 2 * 2048 - T)], dim=-1)
    with torch.inference_mode():
        a, _ = small_model.encode(x)
        b, _ = small_model.encode(padded)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_decode_is_a_pure_function_of_the_latent(small_model):
    z = torch.randn(1, 16, 3)
    with torch.inference_mode():
        first = small_model.decode(z, 5000)
        small_model.encode(torch.randn(4, 2, 9000))  # must leave nothing behind
        second = small_model.decode(z, 5000)
        full = small_model.decode(z)
    assert torch.equal(first, second)
    assert full.shape == (1, 2, 3 * 2048)
    assert torch.equal(full[..., :5000], first)


def test_logvar_is_clamped():
    torch.manual_seed(0)
    model = build_model(ModelConfig.small(logvar_clamp=0.01)).eval()
    with torch.inference_mode():
        _, logvar = model.encode(10 * torch.randn(1, 2, 4096))
    assert logvar.abs().max() <= 0.01
    assert logvar.abs().max() > 0.009  # the clamp is reached, so it did something


def test_sample_is_reparameterised_and_differentiable():
    mean = torch.randn(3, 4, 5, requires_grad=True)
    logvar = torch.randn(3, 4, 5, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    z = VAE.sample(mean, logvar, generator=g)
    eps = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z, mean + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones_like(mean))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


def test_sample_statistics_match_the_posterior():
    mean = torch.full((1, 1, 200_000), 1.5)
    logvar = torch.full((1, 1, 200_000), math.log(0.25))
    z = VAE.sample(mean, logvar, generator=torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - 1.5) < 0.01
    assert abs(z.std().item() - 0.5) < 0.01


def test_bad_shapes_and_lengths_are_clear_errors(small_model):
    with pytest.raises(LyraError, match=r"\[batch, 2, time\]"):
        small_model.encode(torch.randn(1, 1, 100))
    with pytest.raises(LyraError, match="at least one sample"):
        small_model.encode(torch.randn(1, 2, 0))
    with pytest.raises(LyraError, match=r"\[batch, 16, frames\]"):
        small_model.decode(torch.randn(1, 8, 2))
    with pytest.raises(LyraError, match=r"length must be in 1\.\.4096"):
        small_model.decode(torch.randn(1, 16, 2), 5000)


def test_build_model_accepts_a_plain_dict_and_validates_it():
    model = build_model({"base_channels": 8, "latent_dim": 4, "c_mults": [1, 2], "strides": [4, 4]})
    assert model.hop_length == 16
    with pytest.raises(LyraError, match=r"model\.c_mults/strides: lengths differ"):
        build_model({"strides": [2, 2, 2, 2, 2], "c_mults": [1, 2]})


def test_unknown_component_name_fails_at_build_with_the_registered_names():
    with pytest.raises(LyraError, match=r"model\.activation: unknown activation 'snek'.*did you mean 'snake'.*registered: .*snake"):
        build_model(ModelConfig.small(activation="snek"))
