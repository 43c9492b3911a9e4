"""Streaming a model built with the layers audio codecs use: weight-normed (and spectrally
normed) convolutions and transposed convolutions, in the `parametrizations` form and the older
hook form, from an outside plugin package run through the installed `lyra` CLI (issue 22).
Streamed equals offline; what truly mixes time is still refused, in one line saying how to
declare a component."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import lyra
from lyra.audio.container import read_lyra
from lyra.cli import main
from lyra.codec.streaming import decode_stream, encode_stream, receptive_field
from lyra.core.errors import LyraError
from lyra.model.config import ModelConfig
from cli_helpers import lyra_env, lyra_executable
from plugin_helpers import clean_registry, write_distribution  # noqa: F401  (fixture)

TOL = 1e-4  # what tests/test_streaming.py allows streamed vs offline

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

# An outside package as its author would write it: standard PyTorch layers only.
PLUGIN = '''
import math

import torch
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm, weight_norm


def normed(conv, form, norm="weight"):
    """`conv` weight-normed (or spectrally normed) in `form`: "parametrizations" (the current
    API), "hooks" (the older one: weight_g/weight_v and a forward pre-hook), or "plain"."""
    if form == "parametrizations":
        return getattr(parametrizations, f"{norm}_norm")(conv)
    return {"weight": weight_norm, "spectral": spectral_norm}[norm](conv) if form == "hooks" else conv


class GatedUnit(nn.Module):
    """x + 1x1(tanh(a) * sigmoid(b)), (a, b) = WN(dilated conv)(x): a WaveNet-style gate."""

    def __init__(self, channels, dilation=1, kernel_size=7, activation="snake", *, form="parametrizations"):
        super().__init__()
        self.dilated = normed(nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation,
                                        padding=dilation * (kernel_size - 1) // 2), form)
        self.mix = normed(nn.Conv1d(channels, channels, 1), form, "spectral")

    def forward(self, x):
        a, b = self.dilated(x).chunk(2, dim=1)                 # [B, C, T] -> 2 x [B, C, T]
        return x + self.mix(torch.tanh(a) * torch.sigmoid(b))  # [B, C, T]


class UpBlock(nn.Module):
    """LeakyReLU, a weight-normed transposed conv (time x stride), then the residual units."""

    def __init__(self, in_channels, out_channels, stride, dilations=(1, 3, 9), kernel_size=7,
                 activation="snake", residual_unit="residual_unit", *, form="parametrizations"):
        from lyra import registry

        super().__init__()
        self.act = nn.LeakyReLU(0.1)
        self.up = normed(nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride,
                                            padding=math.ceil(stride / 2), output_padding=stride % 2), form)
        self.res = nn.Sequential(*(registry.create("residual_unit", residual_unit, channels=out_channels,
                                                   dilation=d, kernel_size=kernel_size, activation=activation)
                                   for d in dilations))

    def forward(self, x):
        return self.res(self.up(self.act(x)))                  # [B, Cin, T] -> [B, Cout, T*s]


class TimeNormUnit(GatedUnit):
    """Normalises each channel over time: a chunk's statistics are not the signal's."""

    def forward(self, x):
        return super().forward(x - x.mean(dim=-1, keepdim=True))


class PreHookUnit(GatedUnit):
    """Declared streamable, but a forward pre-hook centres the dilated conv's input over time."""

    def __init__(self, channels, dilation=1, kernel_size=7, activation="snake"):
        super().__init__(channels, dilation, kernel_size, activation, form="plain")
        self.dilated.register_forward_pre_hook(lambda conv, args: (args[0] - args[0].mean(-1, keepdim=True),))


def register(registry):
    registry.register("residual_unit", "wn_gated_unit", GatedUnit, streamable=True)
    registry.register("decoder_block", "wn_up_block", UpBlock, streamable=True)
    registry.register("residual_unit", "time_norm_unit", TimeNormUnit)
    registry.register("residual_unit", "time_norm_unit_no", TimeNormUnit, streamable=False)
    registry.register("residual_unit", "pre_hook_unit", PreHookUnit, streamable=True)
'''

# ModelConfig.small()-like, scaled down: hop 16, so short audio spans many chunks.
TINY = dict(base_channels=4, latent_dim=4, c_mults=(1, 2), strides=(4, 4), dilations=(1, 3))


@pytest.fixture
def outside_plugin(tmp_path, monkeypatch):
    """The package 'installed' (metadata + source in a site folder) for this process and for
    the `lyra` subprocesses; returns their environment."""
    site = write_distribution(tmp_path / "site", "lyra-wn-blocks", "0.1.0", {"wn": "lyra_wn_blocks:register"},
                              {"lyra_wn_blocks.py": PLUGIN})
    monkeypatch.syspath_prepend(str(site))
    return lyra_env(PYTHONPATH=str(site))


def checkpoint(tmp_path, name: str, **model) -> str:
    """`lyra init-checkpoint --config` for a [model] table (in process: the plugin is on sys.path)."""
    def value(v):
        return f"[{', '.join(map(str, v))}]" if isinstance(v, tuple) else f'"{v}"' if isinstance(v, str) else str(v)

    options = model.pop("options", {})
    lines = ["[model]", *(f"{k} = {value(v)}" for k, v in {**TINY, **model}.items())]
    for component, table in options.items():
        lines += [f"[model.options.{component}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text("\n".join(lines) + "\n")
    ckpt = tmp_path / f"{name}.pt"
    assert main(["init-checkpoint", str(ckpt), "--config", str(cfg), "--seed", "3"]) == 0
    return str(ckpt)


def start_lyra(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """`lyra ARGS` started by the installed entry point (it imports torch while this process
    works on; `.communicate()` collects stdout bytes and stderr text)."""
    return subprocess.Popen([lyra_executable(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def finished(proc: subprocess.Popen) -> tuple[int, bytes, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err.decode(errors="replace")


def audio_file(tmp_path) -> str:
    wav = tmp_path / "in.wav"
    rng = np.random.default_rng(22)
    sf.write(wav, (0.3 * rng.standard_normal((16 * 90 + 5, 2))).astype(np.float32), 44100)
    return str(wav)


@pytest.mark.parametrize("form", ["parametrizations", "hooks"])
def test_a_weight_normed_plugin_streams_through_the_cli_as_it_decodes_offline(outside_plugin, tmp_path, form):
    """`lyra encode --stream` == `lyra encode`, and `lyra decode --stream` == `lyra decode`,
    for a model whose residual units and decoder blocks are weight-normed plugin layers."""
    options = {c: {"form": form} for c in ("wn_gated_unit", "wn_up_block")}
    ckpt = checkpoint(tmp_path, form, residual_unit="wn_gated_unit", decoder_block="wn_up_block", options=options)
    wav, out = audio_file(tmp_path), {n: str(tmp_path / n) for n in ("o.lyra", "s.lyra", "o.wav", "s.wav")}
    common = ["-c", ckpt, "--device", "cpu"]
    chunk = ["--stream", "--chunk-seconds", "0.002"]          # ~6 latent frames a chunk: many chunks
    # `lyra encode --stream` by the installed `lyra`, which finds the plugin through its entry
    # point as a user's shell would; the rest in this process (the same CLI code, one torch
    # import less each).
    proc = start_lyra("encode", wav, out["s.lyra"], *common, "--dtype", "float32", *chunk, env=outside_plugin)
    assert main(["encode", wav, out["o.lyra"], *common, "--dtype", "float32"]) == 0
    assert main(["decode", out["o.lyra"], out["o.wav"], *common, "--subtype", "FLOAT"]) == 0
    assert main(["decode", out["o.lyra"], out["s.wav"], *common, "--subtype", "FLOAT", *chunk]) == 0
    code, _, err = finished(proc)
    assert code == 0 and "error" not in err, err
    offline, streamed = read_lyra(out["o.lyra"])[1], read_lyra(out["s.lyra"])[1]
    assert offline.shape == (4, 91)
    torch.testing.assert_close(streamed, offline, rtol=0, atol=TOL)
    whole, chunked = (sf.read(out[n], dtype="float32")[0] for n in ("o.wav", "s.wav"))
    assert whole.shape == (16 * 90 + 5, 2) and np.abs(whole).max() > 1e-3
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=TOL)


@pytest.mark.parametrize("unit, declared", [("time_norm_unit", "without streamable"),
                                            ("time_norm_unit_no", "with streamable=False")])
def test_a_plugin_that_normalises_over_time_is_refused_saying_how_to_declare(outside_plugin, tmp_path, capsys,
                                                                            unit, declared):
    """`lyra encode --stream` and `lyra decode --stream` refuse it in one line, writing nothing;
    without --stream it works. (One of the two through a fresh `lyra` process is enough.)"""
    ckpt = checkpoint(tmp_path, unit, residual_unit=unit)
    wav, out, lat, back = audio_file(tmp_path), tmp_path / "s.lyra", tmp_path / "o.lyra", tmp_path / "s.wav"
    proc = start_lyra("encode", wav, str(out), "-c", ckpt, "--stream", env=outside_plugin) if unit == "time_norm_unit" else None
    assert main(["encode", wav, str(lat), "-c", ckpt]) == 0
    capsys.readouterr()
    assert main(["decode", str(lat), str(back), "-c", ckpt, "--stream"]) == 1
    err = capsys.readouterr().err
    assert main(["encode", wav, str(out), "-c", ckpt, "--stream"]) == 1
    assert capsys.readouterr() == ("", err)
    if proc is not None:
        assert finished(proc) == (1, b"", err)
    assert err == (
        f"lyra: error: cannot stream this model: residual_unit '{unit}' (plugin 'wn' (lyra-wn-blocks)) at "
        "Encoder.blocks.0.res.0 is not registered as streamable (it may mix time in ways streaming cannot "
        "measure); if it mixes time only through the nn.Conv1d/nn.ConvTranspose1d layers it holds, declare "
        f"it with registry.register('residual_unit', '{unit}', ..., streamable=True); otherwise encode/decode "
        "without --stream\n"), declared
    assert not out.exists() and not back.exists()


def test_a_time_mixing_forward_hook_on_a_convolution_is_refused(outside_plugin, tmp_path):
    """A hook that is not a weight norm changes what the convolution computes: streaming
    cannot measure it, even inside a component declared streamable."""
    model = lyra.build_model(ModelConfig(**TINY, residual_unit="pre_hook_unit")).eval()
    with pytest.raises(LyraError, match=r"^cannot stream this model: Encoder\.blocks\.0\.res\.0\.dilated \(a "
                                        r"Conv1d\) has a forward pre-hook \(.*<lambda>\), which may mix time in "
                                        r"ways streaming cannot measure; encode/decode without --stream$"):
        list(encode_stream(model, [torch.randn(2, 160)], 4))


# -- the same, in process, on Lyra's own layers ------------------------------------------
def all_weight_normed(model: nn.Module, form: str) -> nn.Module:
    """Weight norm on every conv and transposed conv of `model`, as an importer might leave it."""
    for module in list(model.modules()):
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            if form == "parametrizations":
                parametrizations.weight_norm(module)
            else:
                torch.nn.utils.weight_norm(module)
    return model


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*is deprecated")
@pytest.mark.parametrize("form", ["parametrizations", "hooks"])
def test_lyras_own_convolutions_weight_normed_stream_as_offline(form):
    torch.manual_seed(4)
    model = all_weight_normed(lyra.build_model(ModelConfig(**TINY)), form).eval()
    assert parametrize.is_parametrized(model.decoder.blocks[0].up) == (form == "parametrizations")
    x = torch.randn(2, 16 * 70 + 3)
    with torch.no_grad():
        mean = model.encode(x[None])[0][0]
        audio = model.decode(mean[None], x.shape[-1])[0]
    streamed = torch.cat(list(encode_stream(model, x.split(37, dim=-1), 5)), dim=-1)
    torch.testing.assert_close(streamed, mean, rtol=0, atol=TOL)
    decoded = torch.cat(list(decode_stream(model, mean.split(3, dim=-1), 5, length=x.shape[-1])), dim=-1)
    torch.testing.assert_close(decoded, audio, rtol=0, atol=TOL)


class Widened(nn.Module):
    """A parametrisation that repeats the kernel's end taps: 3 taps stored, 5 applied."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(weight, (1, 1), mode="replicate")   # [O, I, 3] -> [O, I, 5]


def test_the_receptive_field_reads_the_kernel_the_convolution_applies():
    """Padding, stride and dilation come from the conv module, the kernel length from the weight
    its forward uses (a parametrisation may change it): measured == a gradient probe."""
    conv = nn.Conv1d(1, 1, 3, padding=2, dilation=2)
    parametrize.register_parametrization(conv, "weight", Widened(), unsafe=True)
    nn.init.ones_(conv.parametrizations.weight.original)
    x = torch.zeros(1, 1, 41, requires_grad=True)
    y = conv(x)
    assert y.shape[-1] == 41 - 4                              # 5 taps, dilation 2, padding 2 each side
    y[0, 0, 20].backward()
    touched = x.grad[0, 0].nonzero().flatten()
    assert receptive_field(nn.Sequential(conv), torch.zeros(1, 1, 41), "input") == (
        20 - int(touched.min()), int(touched.max()) - 20)
