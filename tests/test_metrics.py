"""Evaluation metrics: SI-SDR against a float64 formula, STFT and mel distances' behaviour."""

import pytest
import torch

from lyra.core.errors import LyraError
from lyra.eval.stft import MultiResolutionSTFTLoss
from lyra.eval.metrics import mel_distance, si_sdr, stft_distance


def _si_sdr_reference(ref, est):
    """Le Roux et al. 2019, one channel, float64, zero-mean."""
    ref = ref.double() - ref.double().mean()
    est = est.double() - est.double().mean()
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * torch.log10((target @ target) / ((est - target) @ (est - target)))


def test_si_sdr_matches_float64_formula():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 2, 4000, generator=g)
    est = 0.5 * ref + 0.3 * torch.randn(3, 2, 4000, generator=g) + 0.1
    got = si_sdr(ref, est)
    expected = torch.stack([
        torch.stack([_si_sdr_reference(ref[b, c], est[b, c]) for c in range(2)]).mean() for b in range(3)
    ])
    assert got.shape == (3,)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    # [C, T] input gives a 0-d value for that one example.
    torch.testing.assert_close(si_sdr(ref[1], est[1]).double(), expected[1], rtol=1e-4, atol=1e-4)


def test_si_sdr_is_scale_invariant_and_orders_quality():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 8000, generator=g)
    noise = torch.randn(2, 8000, generator=g)
    a = si_sdr(ref, ref + 0.1 * noise)
    torch.testing.assert_close(si_sdr(ref, 5.0 * (ref + 0.1 * noise)), a, rtol=1e-4, atol=1e-4)
    assert si_sdr(ref, ref + 0.5 * noise) < a
    assert si_sdr(ref, ref).item() > 60


def test_stft_distance_is_the_loss_per_example():
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(2, 2, 8192, generator=g)
    est = ref + 0.2 * torch.randn(2, 2, 8192, generator=g)
    got = stft_distance(ref, est)
    loss = MultiResolutionSTFTLoss()
    expected = torch.stack([loss(est[i:i + 1], ref[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(got, expected)
    assert stft_distance(ref[0], ref[0]).item() == pytest.approx(0.0, abs=1e-6)


def test_mel_distance_orders_quality_and_is_zero_for_identity():
    g = torch.Generator().manual_seed(3)
    t = torch.arange(44100) / 44100
    ref = torch.stack([torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 330 * t)])[None]
    small = ref + 0.01 * torch.randn(ref.shape, generator=g)
    large = ref + 0.3 * torch.randn(ref.shape, generator=g)
    assert mel_distance(ref, ref).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < mel_distance(ref, small).item() < mel_distance(ref, large).item()
    assert mel_distance(ref[0], large[0]).dim() == 0


def test_shape_errors():
    with pytest.raises(LyraError, match="differ"):
        si_sdr(torch.zeros(2, 10), torch.zeros(2, 11))
    with pytest.raises(LyraError, match=r"\[B, C, T\]"):
        mel_distance(torch.zeros(10), torch.zeros(10))


@pytest.mark.parametrize("rate", [8000, 96000])
def test_mel_distance_works_at_any_rate_by_measuring_at_44k1(rate):
    """Once: "80 mel bands are too many for fft_size 512 at 96000 Hz"."""
    import torchaudio.functional

    g = torch.Generator().manual_seed(4)
    t = torch.arange(rate // 2) / rate
    ref = torch.stack([torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 330 * t)])
    est = ref + 0.05 * torch.randn(ref.shape, generator=g)
    got = mel_distance(ref, est, sample_rate=rate)
    at_44k1 = [torchaudio.functional.resample(x, rate, 44100) for x in (ref, est)]
    torch.testing.assert_close(got, mel_distance(*at_44k1))
