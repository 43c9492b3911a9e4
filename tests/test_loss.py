"""The training losses against independent references: auraloss, torch.distributions, formulas."""

import math

import auraloss
import numpy as np
import pytest
import torch

from lyra.core.errors import LyraError
from lyra.eval.stft import MultiResolutionSTFTLoss
from lyra.train.losses.kl import kl_divergence, kl_weight


def _pair(batch=1, channels=2, length=8192, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, channels, length, generator=g) * 0.3
    # A related but different signal: scaled, filtered-ish and noisy.
    pred = 0.7 * target + 0.2 * torch.roll(target, 3, dims=-1) + 0.05 * torch.randn(batch, channels, length, generator=g)
    return pred, target


def test_defaults_match_auraloss_for_one_example():
    pred, target = _pair()
    ours = MultiResolutionSTFTLoss()(pred, target)
    ref = auraloss.freq.MultiResolutionSTFTLoss()(pred, target)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_custom_resolutions_and_weights_match_auraloss():
    pred, target = _pair(channels=1, length=4096, seed=1)
    kw = dict(fft_sizes=(256, 128), hop_sizes=(64, 32), win_lengths=(256, 100))
    ours = MultiResolutionSTFTLoss(**kw, w_sc=0.5, w_log_mag=2.0)(pred, target)
    ref = auraloss.freq.MultiResolutionSTFTLoss(**{k: list(v) for k, v in kw.items()}, w_sc=0.5, w_log_mag=2.0)(pred, target)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_batch_loss_is_mean_of_per_example_auraloss():
    pred, target = _pair(batch=3, seed=2)
    target[1] *= 10  # loud example: a whole-batch ratio would be dominated by it
    pred[1] *= 10
    ours = MultiResolutionSTFTLoss()(pred, target)
    ref_loss = auraloss.freq.MultiResolutionSTFTLoss()
    per_example = torch.stack([ref_loss(pred[i:i + 1], target[i:i + 1]) for i in range(3)]).mean()
    torch.testing.assert_close(ours, per_example, rtol=1e-5, atol=1e-6)


def test_sum_difference_matches_auraloss():
    pred, target = _pair(seed=3)
    pred[:, 1] = 0.5 * pred[:, 1]  # make the side signal non-trivial
    kw = dict(fft_sizes=(1024, 2048, 512), hop_sizes=(120, 240, 50), win_lengths=(600, 1200, 240))
    ours = MultiResolutionSTFTLoss(**kw, stereo="sum_difference")(pred, target)
    ref = auraloss.freq.SumAndDifferenceSTFTLoss(**{k: list(v) for k, v in kw.items()})(pred, target)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    both = MultiResolutionSTFTLoss(stereo="both")(pred, target)
    torch.testing.assert_close(both, ref + auraloss.freq.MultiResolutionSTFTLoss()(pred, target), rtol=1e-5, atol=1e-6)


def _slaney_mel_reference(sr, n_fft, n_mels):
    """librosa.filters.mel's default (Slaney scale, Slaney norm), written out in float64."""
    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m):
        m = np.asanyarray(m, dtype=np.float64)
        lin = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return torch.tensor(weights, dtype=torch.float32)


def test_mel_variant_matches_auraloss_with_slaney_filters():
    sr, n_mels = 44100, 64
    pred, target = _pair(seed=4)
    kw = dict(fft_sizes=(2048, 1024), hop_sizes=(512, 256), win_lengths=(2048, 1024))
    ours = MultiResolutionSTFTLoss(**kw, n_mels=n_mels, sample_rate=sr)(pred, target)
    # auraloss builds its filters with librosa (not installed); give it the reference filters.
    ref_loss = auraloss.freq.MultiResolutionSTFTLoss(**{k: list(v) for k, v in kw.items()})
    for stft_loss, n_fft in zip(ref_loss.stft_losses, kw["fft_sizes"]):
        stft_loss.scale = "mel"
        stft_loss.register_buffer("fb", _slaney_mel_reference(sr, n_fft, n_mels)[None])
    torch.testing.assert_close(ours, ref_loss(pred, target), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours, MultiResolutionSTFTLoss(**kw)(pred, target))


def test_zero_for_identical_signals_and_differentiable():
    _, target = _pair()
    loss = MultiResolutionSTFTLoss()
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    pred = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    loss(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(LyraError, match="same non-zero length"):
        MultiResolutionSTFTLoss(fft_sizes=(512,), hop_sizes=(128, 64), win_lengths=(512,))
    with pytest.raises(LyraError, match="too many"):
        MultiResolutionSTFTLoss(fft_sizes=(128,), hop_sizes=(32,), win_lengths=(128,), n_mels=128, sample_rate=44100)
    with pytest.raises(LyraError, match="stereo"):
        MultiResolutionSTFTLoss(stereo="sum_difference")(torch.zeros(1, 1, 4096), torch.zeros(1, 1, 4096))


def test_kl_divergence_matches_torch_distributions():
    g = torch.Generator().manual_seed(5)
    mean = torch.randn(2, 16, 7, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 16, 7, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).mean()
    torch.testing.assert_close(kl_divergence(mean.float(), logvar.float()).double(), expected, rtol=1e-5, atol=1e-6)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_kl_weight_schedules():
    assert kl_weight(0, 1e-4, 100) == 0.0
    assert kl_weight(50, 1e-4, 100) == pytest.approx(5e-5)
    assert kl_weight(100, 1e-4, 100) == pytest.approx(1e-4)
    assert kl_weight(1000, 1e-4, 100) == pytest.approx(1e-4)
    assert kl_weight(0, 1.0, 10, floor=0.2) == pytest.approx(0.2)
    assert kl_weight(5, 1.0, 10, floor=0.2) == pytest.approx(0.6)
    assert kl_weight(2.5, 1.0, 10, shape="cosine") == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    assert kl_weight(5, 1.0, 10, shape="cosine") == pytest.approx(0.5)
    assert kl_weight(3, 0.5, 0) == 0.5  # no annealing
