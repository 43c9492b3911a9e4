"""Adversarial losses against their float64 formulas, and the gradient balancer's math."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lyra.train.losses.adversarial import Balancer, discriminator_loss, feature_matching_loss, generator_loss
from lyra.core.errors import LyraError

SHAPES = [(3, 1, 7, 5), (3, 1, 11, 2), (3, 1, 4)]  # sub-discriminators' logits: any [B, ...]


def _outputs(seed: int, scale: float = 2.0):
    """Three sub-discriminators' (logits, feature_maps) pairs, logits spread around the margins."""
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(s, generator=g, dtype=torch.float64),
             [torch.randn(3, 4, 6, generator=g, dtype=torch.float64) for _ in range(k + 1)])
            for k, s in enumerate(SHAPES)]


def _mean(values):
    return sum(values) / len(values)


# -- GAN losses ------------------------------------------------------------------------------
def test_hinge_losses_equal_their_formulas():
    real, fake = _outputs(0), _outputs(1)
    d_want = _mean([torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean()
                    for (r, _), (f, _) in zip(real, fake)])
    g_want = _mean([torch.clamp(1 - f, min=0).mean() for f, _ in fake])
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"), d_want)
    torch.testing.assert_close(generator_loss(fake, "hinge"), g_want)
    # Plain logits work as well as (logits, features) pairs.
    torch.testing.assert_close(discriminator_loss([r for r, _ in real], [f for f, _ in fake], "hinge"), d_want)
    torch.testing.assert_close(generator_loss([f for f, _ in fake], "hinge"), g_want)


def test_least_squares_losses_equal_their_formulas():
    real, fake = _outputs(2), _outputs(3)
    d_want = _mean([((1 - r) ** 2).mean() + (f ** 2).mean() for (r, _), (f, _) in zip(real, fake)])
    g_want = _mean([((1 - f) ** 2).mean() for f, _ in fake])
    torch.testing.assert_close(discriminator_loss(real, fake, "least_squares"), d_want)
    torch.testing.assert_close(generator_loss(fake, "least_squares"), g_want)


def test_hinge_generator_loss_stops_at_the_margin():
    """relu(1 - D(x^)), not -mean(D(x^)): fake logits above 1 give neither loss nor gradient."""
    fake = torch.tensor([[1.5, 3.0], [0.0, 2.0]], requires_grad=True)
    loss = generator_loss([fake], "hinge")
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(0.25))
    torch.testing.assert_close(fake.grad, torch.tensor([[0.0, 0.0], [-0.25, 0.0]]))


def test_losses_are_float32_under_half_precision_logits_and_reject_bad_input():
    fake = [torch.randn(2, 5).half()]
    assert generator_loss(fake).dtype == torch.float32
    assert discriminator_loss(fake, fake, "least_squares").dtype == torch.float32
    with pytest.raises(LyraError, match="expected kind 'hinge' or 'least_squares', got 'wasserstein'"):
        generator_loss(fake, "wasserstein")
    with pytest.raises(LyraError, match="2 real outputs but 1 fake ones"):
        discriminator_loss(fake * 2, fake)


# -- feature matching --------------------------------------------------------------------------
def test_feature_matching_is_the_mean_relative_l1_over_layers_and_sub_discriminators():
    real, fake = _outputs(4), _outputs(5)
    per_disc = [_mean([(r - f).abs().mean() / r.abs().mean() for r, f in zip(rf, ff)])
                for (_, rf), (_, ff) in zip(real, fake)]
    torch.testing.assert_close(feature_matching_loss(real, fake), _mean(per_disc))  # eps = 1e-8 in the denominator
    plain = [_mean([(r - f).abs().mean() for r, f in zip(rf, ff)]) for (_, rf), (_, ff) in zip(real, fake)]
    torch.testing.assert_close(feature_matching_loss(real, fake, relative=False), _mean(plain))
    # Feature-map lists work as well as pairs; equal features give zero.
    torch.testing.assert_close(feature_matching_loss([f for _, f in real], [f for _, f in fake]), _mean(per_disc))
    assert feature_matching_loss(real, real).item() == 0.0


def test_feature_matching_trains_only_the_generated_side():
    real = [torch.randn(2, 3, 4, requires_grad=True)]
    fake = [torch.randn(2, 3, 4, requires_grad=True)]
    feature_matching_loss([real], [fake]).backward()
    assert real[0].grad is None
    assert fake[0].grad is not None and fake[0].grad.abs().sum() > 0
    with pytest.raises(LyraError, match="sub-discriminator 0 has 1 real feature maps but 2 fake ones"):
        feature_matching_loss([real], [fake * 2])


# -- the balancer ------------------------------------------------------------------------------
class Tiny(nn.Module):
    """A 'generator' y = W x, and a 'discriminator' whose parameters must get no gradient."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gen = nn.Linear(6, 8, bias=False).double()
        self.disc = nn.Linear(8, 1).double()


def _losses(model: Tiny, x: torch.Tensor, target: torch.Tensor, big: float = 1000.0):
    y = model.gen(x)                                                   # [B, 8]
    return y, {"recon": big * (y - target).square().mean(),           # scale 1000
               "adv": -model.disc(torch.tanh(y)).mean()}              # scale ~1, through the discriminator


def _per_example_norm(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(1).norm(dim=1).mean()


def test_balanced_gradients_get_their_weights_share_of_the_norm():
    model = Tiny()
    x, target = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    balancer = Balancer({"recon": 1.0, "adv": 3.0}, total_norm=2.0)
    y, losses = _losses(model, x, target)
    grads = {k: torch.autograd.grad(v, y, retain_graph=True)[0] for k, v in losses.items()}
    got = balancer.gradient(losses, y)
    # G = sum_i w_i / sum w * total_norm * g_i / n_i, n_i the mean per-example norm (first step: no EMA yet).
    want = {k: w / 4 * 2.0 * grads[k] / _per_example_norm(grads[k]) for k, w in (("recon", 1.0), ("adv", 3.0))}
    torch.testing.assert_close(got, want["recon"] + want["adv"])
    ratio = _per_example_norm(want["adv"]) / _per_example_norm(want["recon"])
    torch.testing.assert_close(ratio, torch.tensor(3.0, dtype=torch.float64))   # 1:3, though the losses are 1000:1
    assert balancer.last_norms() == pytest.approx({k: _per_example_norm(g).item() for k, g in grads.items()})


def test_backward_carries_the_balanced_gradient_into_the_generator_only():
    model = Tiny()
    x, target = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    y, losses = _losses(model, x, target)
    want_g = Balancer({"recon": 1.0, "adv": 3.0}).gradient(losses, y)
    kl = 0.3 * model.gen.weight.square().sum()              # a loss that bypasses the output
    returned = Balancer({"recon": 1.0, "adv": 3.0}).backward(losses, y, other=kl, scale=8.0)
    torch.testing.assert_close(returned, want_g)
    # dW = scale * (G^T x + d(kl)/dW) for y = x W^T.
    want = 8.0 * (want_g.T @ x + 0.6 * model.gen.weight.detach())
    torch.testing.assert_close(model.gen.weight.grad, want)
    assert model.disc.weight.grad is None and model.disc.bias.grad is None


def test_the_norms_are_an_exponential_moving_average_and_resume_exactly():
    model = Tiny()
    x, target = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    balancer = Balancer({"recon": 1.0, "adv": 1.0}, decay=0.5)
    norms = []
    for big in (1.0, 10.0):
        y, losses = _losses(model, x, target, big)
        norms.append(_per_example_norm(torch.autograd.grad(losses["recon"], y, retain_graph=True)[0]).item())
        g = balancer.gradient(losses, y)
    # Bias-corrected EMA: (0.5 n1 + n2) / (0.5 + 1).
    ema = (0.5 * norms[0] + norms[1]) / 1.5
    assert balancer.last_norms()["recon"] == pytest.approx(ema, rel=1e-12)
    grad_recon = torch.autograd.grad(losses["recon"], y, retain_graph=True)[0]
    grad_adv = torch.autograd.grad(losses["adv"], y, retain_graph=True)[0]
    torch.testing.assert_close(g, 0.5 * grad_recon / ema + 0.5 * grad_adv / balancer.last_norms()["adv"])

    # A balancer restored from the state dict continues exactly where this one is.
    restored = Balancer({"recon": 1.0, "adv": 1.0}, decay=0.5)
    restored.load_state_dict(balancer.state_dict())
    y, losses = _losses(model, x, target, 100.0)
    torch.testing.assert_close(restored.gradient(losses, y), balancer.gradient(losses, y), rtol=0, atol=0)
    fresh = Balancer({"recon": 1.0, "adv": 1.0}, decay=0.5)
    assert not torch.allclose(fresh.gradient(losses, y), balancer.gradient(losses, y))


def test_a_loss_may_join_later_and_only_present_losses_share_the_norm():
    model = Tiny()
    x, target = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    balancer = Balancer({"recon": 1.0, "adv": 3.0})
    y, losses = _losses(model, x, target)
    g = balancer.gradient({"recon": losses["recon"]}, y)   # warm-up: reconstruction alone gets it all
    torch.testing.assert_close(_per_example_norm(g), torch.tensor(1.0, dtype=torch.float64))
    assert set(balancer.state_dict()["sums"]) == {"recon"}


def test_without_rescaling_it_is_the_weighted_sum_and_bad_input_is_an_error():
    model = Tiny()
    x, target = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    y, losses = _losses(model, x, target)
    g = Balancer({"recon": 2.0, "adv": 5.0}, rescale=False).gradient(losses, y)
    want = torch.autograd.grad(2.0 * losses["recon"] + 5.0 * losses["adv"], y, retain_graph=True)[0]
    torch.testing.assert_close(g, want)
    balancer = Balancer({"recon": 1.0})
    with pytest.raises(LyraError, match=r"no weight for loss 'adv' \(weights: recon\)"):
        balancer.gradient(losses, y)
    with pytest.raises(LyraError, match="loss 'recon' does not depend on the output"):
        balancer.gradient({"recon": model.gen.weight.sum()}, y)
    with pytest.raises(LyraError, match="weight of 'adv' must be a finite number >= 0"):
        Balancer({"adv": -1.0})
