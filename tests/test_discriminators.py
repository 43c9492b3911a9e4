"""The built-in discriminators against reference computations, and the `discriminator` kind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from lyra import registry
from lyra.model.discriminators import (MultiPeriodDiscriminator, MultiScaleSTFTDiscriminator, check_output)
from lyra.core.errors import LyraError
from plugin_helpers import clean_registry, write_distribution  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

SMALL_STFT = dict(filters=4, n_ffts=(64, 32), dilations=(1, 2, 4))
SMALL_MPD = dict(periods=(2, 3, 5), widths=(4, 8, 8))


def _weight(conv: torch.nn.Conv2d) -> torch.Tensor:
    """The weight-normed weight, recomputed in float64 from its two parameters: g * v / ||v||."""
    assert parametrize.is_parametrized(conv, "weight")
    g = conv.parametrizations.weight.original0.detach().double()
    v = conv.parametrizations.weight.original1.detach().double()
    return g * v / v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))


# -- the registry ------------------------------------------------------------------------------
def test_builtins_are_registered_under_the_discriminator_kind():
    assert {"ms_stft", "mpd"} <= set(registry.names("discriminator"))
    assert registry.get("discriminator", "ms_stft") is MultiScaleSTFTDiscriminator
    assert registry.get("discriminator", "mpd") is MultiPeriodDiscriminator
    found = registry.component("discriminator", "mpd")
    assert (found.kind, found.provider, found.plugin) == ("discriminator", "lyra", None)
    d = registry.create("discriminator", "mpd", channels=2, sample_rate=44100, **SMALL_MPD)
    assert isinstance(d, MultiPeriodDiscriminator) and registry.built_by(d) == (found,)


def test_builtin_discriminators_load_lazily_on_the_first_lookup():
    """In a fresh interpreter, plugins off: `import lyra` does not import them; a lookup does."""
    script = textwrap.dedent("""
        import json, sys
        import lyra
        before = "lyra.model.discriminators" in sys.modules
        names = lyra.registry.names("discriminator")
        print(json.dumps({"before": before, "after": "lyra.model.discriminators" in sys.modules, "names": names}))
    """)
    env = {**os.environ, registry.AUTOLOAD_ENV: "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"before": False, "after": True,
                                                                "names": ["mpd", "ms_stft"]}


def test_a_plugin_registers_a_discriminator_through_its_entry_point(tmp_path, monkeypatch):
    source = """
        import torch
        from torch import nn

        class WaveCritic(nn.Module):
            def __init__(self, channels, sample_rate, width=3):
                super().__init__()
                self.sample_rate = sample_rate
                self.conv = nn.Conv1d(channels, width, 5)
                self.post = nn.Conv1d(width, 1, 3)

            def forward(self, x):
                h = torch.relu(self.conv(x))
                return [(self.post(h), [h])]

        def register(registry):
            registry.register("discriminator", "wave_critic", WaveCritic)
        """
    root = write_distribution(tmp_path / "site", "critic-plugin", "1.0",
                              {"critic": "critic_plugin:register"}, {"critic_plugin.py": source})
    monkeypatch.syspath_prepend(str(root))
    assert "wave_critic" not in registry.names("discriminator")  # found lazily, on the first miss
    d = registry.create("discriminator", "wave_critic", channels=2, sample_rate=16000, width=6)
    found = registry.component("discriminator", "wave_critic")
    assert (found.provider, found.plugin) == ("critic-plugin", "critic")
    assert d.sample_rate == 16000 and d.conv.out_channels == 6
    out = check_output("wave_critic", d(torch.randn(3, 2, 40)), batch=3)
    assert len(out) == 1 and out[0][0].shape == (3, 1, 34)


def test_check_output_names_a_discriminator_that_breaks_the_contract():
    good = [(torch.zeros(2, 1, 5), [torch.zeros(2, 3, 5)])]
    assert check_output("x", good, batch=2) == good
    for bad, message in [
        (torch.zeros(2, 1), r"discriminator 'bad' returned Tensor; expected a non-empty list"),
        ([], r"discriminator 'bad' returned list; expected a non-empty list"),
        ([torch.zeros(2)], r"discriminator 'bad': output 0 is not a \(logits, feature_maps\) pair"),
        ([(torch.zeros(2), torch.zeros(2))], r"output 0's feature maps are not a list of tensors"),
        ([(torch.zeros(3, 1), [])], r"output 0's logits have batch size 3, input had 2"),
    ]:
        with pytest.raises(LyraError, match=message):
            check_output("bad", bad, batch=2)


def test_unknown_or_malformed_options_are_one_line_errors_naming_the_discriminator():
    built_in = r"\(lyra \(built-in\)\)"
    with pytest.raises(LyraError, match=rf"^discriminator 'mpd' {built_in} does not accept option 'period' "
                                        r"\(its options: periods, widths, negative_slope\)$"):
        registry.create("discriminator", "mpd", channels=1, sample_rate=16000, period=(2, 3))
    with pytest.raises(LyraError, match=rf"^discriminator 'ms_stft' {built_in} does not accept option 'nffts' "
                                        r"\(its options: filters, n_ffts, hop_lengths, win_lengths, dilations, negative_slope\)$"):
        registry.create("discriminator", "ms_stft", channels=1, sample_rate=16000, nffts=(64,))
    for options, message in [
        (dict(n_ffts=(64, 0)), r"n_ffts: must be a non-empty list of positive integers, got \(64, 0\)"),
        (dict(n_ffts=(64, 32), hop_lengths=(16,)), r"hop_lengths: needs one value per n_fft \(2\), got 1"),
        (dict(n_ffts=(64,), win_lengths=(128,)), r"win_lengths: each must be at most its n_fft"),
        (dict(negative_slope="steep"), r"negative_slope: must be a number, got 'steep'"),
    ]:
        with pytest.raises(LyraError, match=rf"^discriminator 'ms_stft' {built_in}: {message}"):
            registry.create("discriminator", "ms_stft", channels=1, sample_rate=16000, **options)
    with pytest.raises(LyraError, match=rf"^discriminator 'mpd' {built_in}: widths: must be a non-empty list"):
        registry.create("discriminator", "mpd", channels=1, sample_rate=16000, widths=[])


# -- multi-scale STFT --------------------------------------------------------------------------
def _reference_stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Hann-windowed DFT frames (no centring) over the window's L2 norm, by the definition, in
    float64: [B, C, T] -> [B, 2C, frames, bins] (real parts of every channel, then imaginary)."""
    x = x.double()
    n = torch.arange(n_fft, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)  # periodic Hann
    frames = x.unfold(-1, n_fft, hop) * window                 # [B, C, frames, n_fft]
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = -2 * math.pi * n[:, None] * k[None, :] / n_fft     # [n_fft, bins]
    real = frames @ torch.cos(angle) / window.square().sum().sqrt()
    imag = frames @ torch.sin(angle) / window.square().sum().sqrt()
    return torch.cat([real, imag], dim=1)


def test_ms_stft_features_are_the_normalised_complex_stft_time_first():
    torch.manual_seed(0)
    d = registry.create("discriminator", "ms_stft", channels=2, sample_rate=16000, **SMALL_STFT)
    t = torch.arange(300, dtype=torch.float64)
    x = torch.stack([torch.sin(0.3 * t) + 0.1 * torch.randn(300, dtype=torch.float64),
                     torch.cos(0.05 * t) * 0.5 + 0.1 * torch.randn(300, dtype=torch.float64)])[None]  # [1, 2, 300]
    x = torch.cat([x, -0.5 * x.flip(-1)])                                                              # [2, 2, 300]
    for sub, n_fft in zip(d.discriminators, (64, 32)):
        got = sub.spectrogram(x.float())
        want = _reference_stft(x, n_fft, n_fft // 4)
        assert got.shape == want.shape == (2, 4, (300 - n_fft) // (n_fft // 4) + 1, n_fft // 2 + 1)
        torch.testing.assert_close(got.double(), want, atol=2e-5 * want.abs().max().item(), rtol=0)


def test_ms_stft_first_layer_and_output_structure_match_a_float64_reference():
    torch.manual_seed(1)
    d = registry.create("discriminator", "ms_stft", channels=1, sample_rate=16000, **SMALL_STFT)
    x = torch.randn(2, 1, 256)
    out = d(x)
    assert len(out) == 2
    for (logits, features), sub, n_fft in zip(out, d.discriminators, (64, 32)):
        frames, bins = (256 - n_fft) // (n_fft // 4) + 1, n_fft // 2 + 1
        # First layer: a (3, 9) weight-normed conv over (time, frequency), then LeakyReLU(0.2).
        spec = _reference_stft(x, n_fft, n_fft // 4)
        conv = sub.convs[0]
        want = F.leaky_relu(F.conv2d(spec, _weight(conv), conv.bias.detach().double(), padding=(1, 4)), 0.2)
        torch.testing.assert_close(features[0].double(), want, atol=1e-4, rtol=1e-4)
        # Then three (3, 9) convs dilated 1, 2, 4 in time and strided 2 in frequency, a (3, 3)
        # conv, and a (3, 3) conv to one logit channel: time is kept, frequency halved thrice.
        assert [tuple(c.dilation) for c in sub.convs[1:4]] == [(1, 1), (2, 1), (4, 1)]
        assert [tuple(c.stride) for c in sub.convs] == [(1, 1), (1, 2), (1, 2), (1, 2), (1, 1)]
        assert all(parametrize.is_parametrized(c, "weight") for c in [*sub.convs, sub.conv_post])
        f = bins
        for _ in range(3):
            f = (f - 1) // 2 + 1
        assert [tuple(m.shape) for m in features] == [(2, 4, frames, bins), (2, 4, frames, (bins - 1) // 2 + 1),
                                                      (2, 4, frames, ((bins - 1) // 2) // 2 + 1), (2, 4, frames, f),
                                                      (2, 4, frames, f)]
        assert logits.shape == (2, 1, frames, f)
        # The last feature map and the logits, recomputed from the one before.
        c3, post = sub.convs[4], sub.conv_post
        h = F.leaky_relu(F.conv2d(features[3].double(), _weight(c3), c3.bias.detach().double(), padding=1), 0.2)
        torch.testing.assert_close(features[4].double(), h, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(logits.double(), F.conv2d(h, _weight(post), post.bias.detach().double(), padding=1),
                                   atol=1e-5, rtol=1e-4)


def test_ms_stft_defaults_are_encodec_s_and_short_input_is_a_clear_error():
    d = registry.create("discriminator", "ms_stft", channels=2, sample_rate=44100)
    assert [(s.n_fft, s.hop_length, s.win_length) for s in d.discriminators] == [
        (n, n // 4, n) for n in (2048, 1024, 512, 256, 128)]
    assert all(s.convs[0].in_channels == 4 and s.convs[0].out_channels == 32 for s in d.discriminators)
    with pytest.raises(LyraError, match=r"^discriminator 'ms_stft': input of 2000 samples is shorter than its 2048-sample"):
        d(torch.zeros(1, 2, 2000))


# -- multi-period ------------------------------------------------------------------------------
def test_mpd_folds_by_period_with_reflect_padding_and_its_first_layer_matches_float64():
    torch.manual_seed(2)
    d = registry.create("discriminator", "mpd", channels=2, sample_rate=16000, **SMALL_MPD)
    length = 61  # not a multiple of 2, 3 or 5
    t = torch.arange(length, dtype=torch.float64)
    x = torch.stack([t / length, torch.sin(0.7 * t)])[None].repeat(2, 1, 1)
    x[1] *= -2.0
    out = d(x.float())
    assert len(out) == 3
    for (logits, features), sub, p in zip(out, d.discriminators, (2, 3, 5)):
        pad = (-length) % p
        # Reflect padding repeats x[T-2], x[T-3], ... (not the last sample), then rows of p.
        padded = torch.cat([x, x[..., length - 2 - torch.arange(pad)]], dim=-1)
        rows = (length + pad) // p
        folded = torch.empty(2, 2, rows, p, dtype=torch.float64)
        for i in range(rows):
            for j in range(p):
                folded[:, :, i, j] = padded[:, :, i * p + j]
        torch.testing.assert_close(sub.fold(x), folded)
        # First layer by its definition: kernel (5, 1), stride (3, 1), zero padding 2, LeakyReLU 0.1.
        w, b = _weight(sub.convs[0]), sub.convs[0].bias.detach().double()   # [4, 2, 5, 1], [4]
        zero = F.pad(folded, (0, 0, 2, 2))
        n_out = (rows + 4 - 5) // 3 + 1
        want = torch.empty(2, 4, n_out, p, dtype=torch.float64)
        for i in range(n_out):
            window = zero[:, :, 3 * i:3 * i + 5, :]                          # [B, C, 5, p]
            want[:, :, i, :] = torch.einsum("bckp,ock->bop", window, w[..., 0]) + b[None, :, None]
        torch.testing.assert_close(features[0].double(), F.leaky_relu(want, 0.1), atol=1e-5, rtol=1e-5)
        # The period stays a separate axis to the end: every map is [B, width, rows', p].
        assert [m.shape[1] for m in features] == [4, 8, 8]
        assert all(m.shape[-1] == p for m in [*features, logits]) and logits.shape[:2] == (2, 1)
        assert [tuple(c.stride) for c in sub.convs] == [(3, 1), (3, 1), (1, 1)]
        assert all(parametrize.is_parametrized(c, "weight") for c in [*sub.convs, sub.conv_post])


def test_mpd_defaults_are_hifigan_s():
    d = MultiPeriodDiscriminator(channels=1, sample_rate=22050)
    assert [s.period for s in d.discriminators] == [2, 3, 5, 7, 11]
    sub = d.discriminators[0]
    assert [(c.in_channels, c.out_channels, tuple(c.kernel_size), tuple(c.stride)) for c in sub.convs] == [
        (1, 32, (5, 1), (3, 1)), (32, 128, (5, 1), (3, 1)), (128, 512, (5, 1), (3, 1)),
        (512, 1024, (5, 1), (3, 1)), (1024, 1024, (5, 1), (1, 1))]
    assert (sub.conv_post.in_channels, sub.conv_post.out_channels, tuple(sub.conv_post.kernel_size)) == (1024, 1, (3, 1))


# -- both ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, length", [("ms_stft", SMALL_STFT, 256), ("mpd", SMALL_MPD, 200)])
def test_gradients_reach_the_input_and_every_parameter(name, options, length):
    torch.manual_seed(3)
    d = registry.create("discriminator", name, channels=2, sample_rate=16000, **options)
    x = torch.randn(2, 2, length, requires_grad=True)
    out = check_output(name, d(x), batch=2)
    loss = sum(logits.square().mean() + sum(f.mean() for f in features) for logits, features in out)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    # Each example is judged on its own: the first example's scores do not depend on the second.
    x2 = x.detach().clone()
    x2[1] = torch.randn(2, length)
    for (a, _), (b, _) in zip(d(x.detach()), d(x2)):
        torch.testing.assert_close(a[0], b[0])
        assert not torch.allclose(a[1], b[1])
