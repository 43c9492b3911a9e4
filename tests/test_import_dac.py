"""`lyra import descript-audio-codec` against descript-audio-codec's own model code.

descript-audio-codec (the release pinned in the Makefile, installed with --no-deps) builds its
own `DAC` (encoder, `ResidualVectorQuantize`, decoder, weight-normed convolutions, Snake1d) with
random weights, saves it as its users hold it (audiotools' ``BaseModel.save(path,
package=False)``: the state dict beside the constructor's kwargs), and Lyra imports the file
through the installed `lyra`. Lyra's model must give DAC's codes exactly, and DAC's audio (from
the codes, and along DAC's forward pass) within float32 rounding: rtol 1e-5, atol 1e-5 x the
signal's peak (measured: identical on the CPU here but for a few ulps). Its package's
``__init__``s import audiotools' signal code, a training loss and the discriminator (audio I/O,
STFTs, argbind: dozens of dependencies); `dac_reference` bypasses them and stands in for the
three names the model modules import (``audiotools.AudioSignal``, ``audiotools.ml.BaseModel``
and ``tqdm``). Everything the model runs is DAC's real code.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import re
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cli_helpers import lyra, lyra_many
from lyra.core.errors import LyraError
from lyra.model.checkpoint import load_model, save_checkpoint
from lyra.model.config import ModelConfig
from lyra.model.importers import descript_audio_codec as importer
from lyra.model.vae import build_model

pytestmark = [pytest.mark.usefixtures("one_thread_per_module"),   # DAC 1.0.0's own code, on today's torch:
               pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning"),
               pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")]

REPO = Path(__file__).resolve().parents[1]
# A small DAC: widths 4..32, decoder 48 wide (not the encoder's mirror), hop 64, 4 codebooks of 32.
SMALL = dict(encoder_dim=4, encoder_rates=[2, 4, 8], decoder_dim=48, decoder_rates=[8, 4, 2],
             n_codebooks=4, codebook_size=32, codebook_dim=4)
HOP = 64
STANDINS = ("audiotools", "audiotools.ml", "tqdm", "dac", "dac.nn", "dac.model")


class BaseModel(nn.Module):
    """audiotools 0.7.2's ``BaseModel`` as far as DAC's weight files go: ``save(path,
    package=False)`` stores the constructor's defaults, overridden by the instance's attributes
    of the same names, as ``metadata["kwargs"]`` beside the state dict (its code, line for line)."""

    def save(self, path, metadata=None, package=True):
        assert not package, "torch.package archives are not what DAC publishes"
        sig = inspect.signature(self.__class__)
        args = {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}
        for attribute in dir(self):
            if attribute in args:
                args[attribute] = getattr(self, attribute)
        metadata = {} if metadata is None else metadata
        metadata["kwargs"] = args
        torch.save({"state_dict": self.state_dict(), "metadata": metadata}, path)
        return path


@pytest.fixture(scope="module")
def dac():
    """descript-audio-codec's `dac.model.dac` module (DAC, its encoder and decoder), real code."""
    before = set(sys.modules)
    spec = importlib.util.find_spec("dac")
    if spec is None or spec.origin is None:   # an honest failure, not a skip: `make setup` installs it
        pytest.fail("descript-audio-codec is not installed; run `make setup`")
    root = Path(spec.origin).parent
    audiotools, ml, tqdm = (types.ModuleType(n) for n in ("audiotools", "audiotools.ml", "tqdm"))
    audiotools.AudioSignal = type("AudioSignal", (), {})   # only named in signatures of the model
    ml.BaseModel, audiotools.ml = BaseModel, ml
    for module in (audiotools, ml, tqdm):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
        sys.modules[module.__name__] = module
    for name, folder in (("dac", root), ("dac.nn", root / "nn"), ("dac.model", root / "model")):
        package = types.ModuleType(name)                   # the packages, without their __init__s
        package.__path__ = [str(folder)]
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = package
    from dac.model import dac as module

    yield module
    for name in list(sys.modules):
        if name not in before and (name in STANDINS or name.startswith("dac.")):
            sys.modules.pop(name, None)


def build_dac(dac, seed: int, alphas: tuple[float, float] = (0.4, 2.5), signs: bool = False, **kwargs) -> nn.Module:
    """DAC's model in eval mode, every weight random: weight norm's magnitude drawn apart from its
    direction, biases off zero, Snake's alpha uniform in `alphas` (with `signs`, every third
    negated and one zero), codebooks N(0, 1). Magnitudes below one keep activations O(1)."""
    torch.manual_seed(seed)
    model = dac.DAC(**{**SMALL, **kwargs})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.uniform_(*alphas, generator=g)
                if signs:
                    p.view(-1)[::3] *= -1
                    p.view(-1)[1] = 0.0
            elif name.endswith("weight_g"):
                p.uniform_(0.2, 0.6, generator=g)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


@torch.no_grad()
def dac_outputs(model: nn.Module, x: torch.Tensor, n_quantizers: int | None = None):
    """DAC's own: (codes, audio decoded from the codes, audio of its forward pass), cropped to x."""
    length = x.shape[-1]
    _, codes, *_ = model.encode(model.preprocess(x, None), n_quantizers)   # padded to the hop, as `compress`
    from_codes = model.decode(model.quantizer.from_codes(codes)[0])[..., :length]
    return codes, from_codes, model(x, n_quantizers=n_quantizers)["audio"]


@torch.no_grad()
def lyra_outputs(model, x: torch.Tensor, n_quantizers: int | None = None):
    codes = model.encode_latents(x, n_quantizers)
    out = model.bottleneck(model.encode_features(x))          # the deterministic pass: DAC's forward
    full = model.decode(out.z, x.shape[-1]) if n_quantizers is None else None
    return codes, model.decode_latents(codes, x.shape[-1]), full


def assert_same(ours, theirs) -> None:
    assert ours[0].dtype == torch.int64 and torch.equal(ours[0], theirs[0]), "codes differ"
    for a, b, what in zip(ours[1:], theirs[1:], ("audio from the codes", "audio of the forward pass")):
        if a is None:
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item(), msg=lambda m: f"{what}: {m}")


def imported(src: Path, **kwargs):
    found = importer.import_dac(src, **kwargs)
    model = build_model(found.config).eval()
    model.load_state_dict(found.weights)
    return model


@pytest.fixture(scope="module")
def audio() -> torch.Tensor:
    return 0.5 * torch.randn(2, 1, 30 * HOP + 11, generator=torch.Generator().manual_seed(7))


# -- equivalence ----------------------------------------------------------------------------------
def test_dac_weights_file_through_the_cli_equals_dac(dac, audio, tmp_path):
    model = build_dac(dac, seed=1)
    src = model.save(tmp_path / "weights.pth", package=False)
    done = lyra("import", "descript-audio-codec", src, tmp_path / "dac.pt")
    assert done.returncode == 0, done.stderr
    said = done.stdout.decode()
    assert "4 codebooks of 32" in said and "hop 64" in said and "Lyra's snake" in said
    ours = load_model(tmp_path / "dac.pt").eval()
    cfg = ours.config
    assert (cfg.bottleneck, cfg.channels, cfg.decoder_base_channels, cfg.activation) == ("rvq", 1, 6, "snake")
    # Every tensor imported: DAC's parameters less weight norm's magnitudes, and Snake's one alpha
    # per channel held as Lyra's two log-parameters.
    named = dict(model.named_parameters())
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() * (2 if n.endswith("alpha") else 1) for n, p in named.items() if not n.endswith("weight_g"))
    assert_same(lyra_outputs(ours, audio), dac_outputs(model, audio))
    for n in (1, 3):   # fewer quantisers (variable bitrate): DAC's first n codes, and their audio
        assert_same(lyra_outputs(ours, audio, n), dac_outputs(model, audio, n))


def test_alphas_of_either_sign_import_as_dac_snake(dac, audio, tmp_path):
    """Trained alphas at or below zero (no positive alpha, beta expresses them): every activation
    becomes `dac_snake`, DAC's formula, and the model still equals DAC's."""
    model = build_dac(dac, seed=2, signs=True)
    src = model.save(tmp_path / "weights.pth", package=False)
    done = lyra("import", "descript-audio-codec", src, tmp_path / "dac.pt")
    assert done.returncode == 0, done.stderr
    negative = sum(int((p <= 0).sum()) for n, p in model.named_parameters() if n.endswith("alpha"))
    assert f"dac_snake ({negative} Snake alphas <= 0" in done.stdout.decode()
    ours = load_model(tmp_path / "dac.pt").eval()
    assert ours.config.activation == "dac_snake"
    assert_same(lyra_outputs(ours, audio), dac_outputs(model, audio))


def test_alphas_far_from_one_and_a_bare_state_dict(dac, audio, tmp_path):
    """Alphas over two decades (log alpha far from 0, where exp(log alpha) is alpha within an
    ulp, not always exactly); a plain ``torch.save(model.state_dict())`` with --sample-rate."""
    model = build_dac(dac, seed=3, alphas=(0.05, 10.0))
    torch.save(model.state_dict(), tmp_path / "state.pth")
    with pytest.raises(LyraError, match="no sample rate stored .* pass --sample-rate$"):
        importer.import_dac(tmp_path / "state.pth")
    ours = imported(tmp_path / "state.pth", sample_rate=44100)
    assert ours.config.activation == "snake"
    assert_same(lyra_outputs(ours, audio), dac_outputs(model, audio))


def test_a_swapped_key_or_a_wrong_snake_breaks_equivalence(dac, audio, tmp_path, monkeypatch):
    """The comparison is sensitive: two same-shaped weights swapped in the key map, or Snake's
    beta not DAC's alpha, make Lyra's audio differ from DAC's."""
    model = build_dac(dac, seed=4)
    expected = dac_outputs(model, audio)
    src = model.save(tmp_path / "weights.pth", package=False)
    right = importer.key_map

    def swapped(config: ModelConfig) -> dict[str, str]:
        paths = right(config)
        a, b = "decoder.blocks.1.res.0.conv1", "decoder.blocks.1.res.1.conv1"
        paths[a], paths[b] = paths[b], paths[a]
        return paths
    monkeypatch.setattr(importer, "key_map", swapped)
    with pytest.raises(AssertionError, match="audio from the codes"):
        assert_same(lyra_outputs(imported(src), audio), expected)
    monkeypatch.setattr(importer, "key_map", right)
    ours = imported(src)
    with torch.no_grad():
        ours.decoder.blocks[0].act.log_beta.zero_()          # beta = 1, not alpha
    with pytest.raises(AssertionError, match="audio from the codes"):
        assert_same(lyra_outputs(ours, audio), expected)


def test_real_44khz_architecture_maps_key_for_key(dac):
    """DAC 1.0.0's 44.1 kHz model as published (on the meta device: shapes only): every key maps,
    and the config inferred is configs/descript-audio-codec-44khz.toml's [model]."""
    from lyra.train.config import TrainConfig, commented_toml

    with torch.device("meta"):
        full = dac.DAC()                                      # its defaults are the 44.1 kHz model
    weights, folded = importer.fold_weight_norm(dict(full.state_dict()), "dac")
    kwargs = {"sample_rate": full.sample_rate, "encoder_dim": 64, "encoder_rates": [2, 4, 8, 8],
              "latent_dim": 1024, "decoder_dim": 1536, "decoder_rates": [8, 8, 4, 2], "n_codebooks": 9,
              "codebook_size": 1024, "codebook_dim": 8}
    config = importer.infer_config(weights, kwargs, None, "dac")
    assert importer.map_weights(weights, config, "dac").keys() == _state_keys(config)
    assert folded == sum(1 for n in full.state_dict() if n.endswith("weight_g"))
    assert (config.base_channels, config.decoder_base_channels, config.latent_dim, config.hop_length) == \
        (64, 96, 1024, 512)
    assert round(importer.bitrate(config)) == 7752                   # 86.13 frames/s x 9 codebooks x 10 bits
    with torch.device("meta"):
        n = sum(p.numel() for p in build_model(config).parameters())
    snakes = sum(p.numel() for name, p in full.named_parameters() if name.endswith("alpha"))
    assert n == sum(p.numel() for name, p in full.named_parameters() if not name.endswith("weight_g")) + snakes
    path = REPO / "configs" / "descript-audio-codec-44khz.toml"
    shipped = TrainConfig.load(path)
    assert shipped.model == config
    text = path.read_text()
    header = "\n".join(line[2:] for line in text.split("\n\n")[0].splitlines())
    assert commented_toml(shipped, header) == text          # written by `lyra config init`'s writer


def test_real_44khz_model_with_random_weights_equals_dac(dac, tmp_path):
    """The published architecture at full size (76.7M weights, random), on 16 frames of audio."""
    model = build_dac(dac, seed=5, alphas=(0.05, 10.0), encoder_dim=64, encoder_rates=[2, 4, 8, 8], decoder_dim=1536,
                      decoder_rates=[8, 8, 4, 2], n_codebooks=9, codebook_size=1024, codebook_dim=8)   # DAC's defaults
    src = model.save(tmp_path / "weights_44khz.pth", package=False)
    x = 0.3 * torch.randn(1, 1, 16 * 512 + 100, generator=torch.Generator().manual_seed(8))
    assert_same(lyra_outputs(imported(src), x), dac_outputs(model, x))


def _state_keys(config: ModelConfig) -> set[str]:
    with torch.device("meta"):
        return set(build_model(config).state_dict())


# -- refusals, each one line ---------------------------------------------------------------------
def _saved(tmp_path: Path, state: dict, metadata: object = None, name: str = "bad.pth") -> Path:
    path = tmp_path / name
    torch.save({"state_dict": state, **({"metadata": metadata} if metadata is not None else {})}, path)
    return path


@pytest.fixture(scope="module")
def small(dac):
    model = build_dac(dac, seed=6)
    return dict(model.state_dict()), {"kwargs": {**SMALL, "latent_dim": 32, "quantizer_dropout": False,
                                                 "sample_rate": 44100}}


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("decoder.model.2.block.3.block.1.bias"),
     r"no decoder\.model\.2\.block\.3\.block\.1\.bias \(for Lyra's decoder\.blocks\.1\.res\.1\.conv1\.bias\)"),
    (lambda s: s.pop("encoder.block.2.block.3.alpha"), r"no encoder\.block\.2\.block\.3\.alpha"),
    (lambda s: s.pop("quantizer.quantizers.1.in_proj.weight_g"), "half a weight norm"),
    (lambda s: s.pop("quantizer.quantizers.2.codebook.weight"), r"no quantizer\.quantizers\.2\.codebook\.weight"),
    (lambda s: s.update({"encoder.block.1.block.0.extra": torch.zeros(3)}),
     r"cannot map encoder\.block\.1\.block\.0\.extra"),
    (lambda s: s.update({"quantizer.quantizers.3.codebook.weight": torch.randn(32, 8)}), "codebook 3 is \\[32, 8\\]"),
    (lambda s: s["decoder.model.1.block.1.weight_v"].view(-1)[5].fill_(float("nan")), "holds NaN"),
    (lambda s: s.update({"encoder.block.3.block.1.block.0.alpha": torch.ones(1, 16, 1, dtype=torch.int64)}),
     "not a dense floating-point weight"),
    (lambda s: s.update({"encoder.block.1.block.0.block.0.alpha": torch.ones(4)}),
     r"Snake1d's alpha is \[1, channels, 1\]"),
])
def test_damaged_weights_are_refused_whole(small, tmp_path, change, match):
    state = {k: v.clone() for k, v in small[0].items()}
    change(state)
    with pytest.raises(LyraError, match=match) as caught:
        importer.import_dac(_saved(tmp_path, state, small[1]))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"encoder_rates": [2, 4, 4]}, r"metadata kwargs\.encoder_rates is \[2, 4, 4\], but the weights have \[2, 4, 8\]"),
    ({"decoder_dim": 64}, r"kwargs\.decoder_dim is 64, but the weights have 48"),
    ({"n_codebooks": 9}, r"kwargs\.n_codebooks is 9, but the weights have 4"),
    ({"codebook_dim": [4, 4, 8, 4]}, r"kwargs\.codebook_dim is \[4, 4, 8, 4\]"),
    ({"sample_rate": "44100"}, r"kwargs\.sample_rate must be an integer, got a string"),
    ({"sample_rate": 0}, r"kwargs\.sample_rate must be in 1\.\."),
    ({"encoder_rates": [2, "4", 8]}, r"kwargs\.encoder_rates must be a list of integers"),
    ({"quantizer_dropout": 2.0}, r"kwargs\.quantizer_dropout must be in 0\.\.1"),
])
def test_metadata_disagreeing_with_the_weights_is_refused(small, tmp_path, kwargs, match):
    state, metadata = small
    with pytest.raises(LyraError, match=match):
        importer.import_dac(_saved(tmp_path, state, {"kwargs": {**metadata["kwargs"], **kwargs}}))


def test_metadata_that_is_no_table_and_a_conflicting_sample_rate(small, tmp_path):
    state, metadata = small
    with pytest.raises(LyraError, match="metadata must be a table with a 'kwargs' table"):
        importer.import_dac(_saved(tmp_path, state, {"args": {}}))
    with pytest.raises(LyraError, match="its metadata says sample_rate 44100, --sample-rate says 48000"):
        importer.import_dac(_saved(tmp_path, state, metadata), sample_rate=48000)


def test_other_architectures_are_named_and_refused(dac, tmp_path):
    """A torch.package archive, a Lyra checkpoint, a Lyra export, a stable-audio-tools VAE, a DAC
    with an odd stride or a decoder that does not mirror its encoder, a text file: one line each
    (through the CLI: nothing written)."""
    from lyra.model.export import export_model
    from lyra.model.importers.stable_audio_tools import key_map as sat_map

    lyra_model = build_model(ModelConfig.small())
    save_checkpoint(tmp_path / "lyra.pt", lyra_model)
    export_model(tmp_path / "lyra.pt", tmp_path / "lyra.safetensors")
    sat = {f"{sat_map(lyra_model.config)[n.rsplit('.', 1)[0]]}.{n.rsplit('.', 1)[1]}": v
           for n, v in lyra_model.state_dict().items()}
    save_file(sat, str(tmp_path / "sat.safetensors"))
    odd = build_dac(dac, seed=7, encoder_rates=[2, 5], decoder_rates=[5, 2])
    unmirrored = build_dac(dac, seed=7, encoder_rates=[2, 4], decoder_rates=[2, 4])
    (tmp_path / "text.pth").write_text("not a model")
    with warnings.catch_warnings(), torch.package.PackageExporter(tmp_path / "package.pth") as exporter:
        warnings.simplefilter("ignore")                     # torch.package's own TypedStorage deprecation
        exporter.extern("torch.**")
        exporter.save_pickle("DAC", "DAC.pth", nn.Conv1d(1, 4, 7))   # what save(package=True) makes of a model
    cases = {
        "package.pth": r"a torch.package archive .* model\.save\(path, package=False\)",
        "lyra.pt": "a Lyra checkpoint already",
        "lyra.safetensors": "no descript-audio-codec model found .*: it holds a Lyra model's weights",
        "sat.safetensors": "stable-audio-tools' Oobleck layout",
        odd.save(tmp_path / "odd.pth", package=False).name: "stride 5 is odd",
        unmirrored.save(tmp_path / "unmirrored.pth", package=False).name: r"decoder_rates \[2, 4\] do not mirror",
        "text.pth": "cannot be read safely as tensors",
    }
    for name, match in cases.items():
        with pytest.raises(LyraError, match=match) as caught:
            importer.import_dac(tmp_path / name)
        assert "\n" not in str(caught.value)
    runs = lyra_many([("import", "descript-audio-codec", tmp_path / name, tmp_path / f"out-{name}.pt")
                      for name in ("lyra.pt", "odd.pth")])
    for name, done in zip(("lyra.pt", "odd.pth"), runs):
        assert done.returncode == 1 and done.stderr.count("\n") == 1, (name, done.stderr)
        assert re.match(f"lyra: error: .*{cases[name]}", done.stderr), (name, done.stderr)
        assert not (tmp_path / f"out-{name}.pt").exists()


# -- the rest of Lyra on the imported model --------------------------------------------------------
def test_imported_model_streams_and_compiles_like_any_lyra_model(dac, tmp_path):
    from lyra.codec.streaming import decode_stream, encode_stream

    model = build_dac(dac, seed=9)
    ours = imported(model.save(tmp_path / "weights.pth", package=False))
    x = 0.5 * torch.randn(1, 40 * HOP + 5, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        codes = ours.encode_latents(x[None])[0]
        whole = ours.decode_latents(codes[None], x.shape[-1])[0]
        streamed_codes = torch.cat(list(encode_stream(ours, x.split(97, dim=-1), 4)), dim=-1)
        streamed = torch.cat(list(decode_stream(ours, streamed_codes.split(3, dim=-1), 5, length=x.shape[-1])), dim=-1)
    assert torch.equal(streamed_codes, codes)
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())

    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    compiled = imported(tmp_path / "weights.pth").compile(backend="aot_eager")
    with torch.inference_mode():
        c = compiled.encode_latents(x[None])
        y = compiled.decode_latents(c, x.shape[-1])
    assert not counters["graph_break"]
    assert torch.equal(c[0], codes)
    torch.testing.assert_close(y[0], whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())
    torch._dynamo.reset()


# -- decoder_base_channels: a decoder wider than the encoder's mirror ----------------------------------
def test_decoder_base_channels_widens_the_decoder_only_and_keeps_old_fingerprints(tmp_path):
    from lyra.model.checkpoint import fingerprint_config

    mirror, wide = ModelConfig.small(), ModelConfig.small(decoder_base_channels=24)
    a, b = build_model(mirror), build_model(wide)
    assert b.decoder.widths == [24 * m for m in (1, *wide.c_mults)][::-1] and b.encoder.widths == a.encoder.widths
    assert b.decoder.conv_out.in_channels == 24 and b.decoder.conv_in.out_channels == 24 * wide.c_mults[-1]
    x = torch.randn(1, 2, 2 * wide.hop_length)
    with torch.no_grad():
        assert b.decode(b.encode(x)[0]).shape == x.shape
    # Unset (0), it is not hashed: every model written before it existed keeps its fingerprint.
    assert "decoder_base_channels" not in fingerprint_config(ModelConfig()) and \
        fingerprint_config(wide)["decoder_base_channels"] == 24
    with pytest.raises(LyraError, match="^decoder_base_channels: must be positive, or 0"):
        ModelConfig.small(decoder_base_channels=-1)
    (tmp_path / "huge.toml").write_text("[model]\ndecoder_base_channels = 10000000\n")
    with pytest.raises(LyraError, match="huge.toml:model.*weights"):
        ModelConfig.from_toml(tmp_path / "huge.toml")


def test_lyra_encode_and_decode_of_a_file_give_dacs_codes_and_audio(dac, tmp_path):
    """`lyra encode` of a mono 44.1 kHz float WAV with the imported model stores DAC's codes in the
    .lyra file (all of them, and the first 2 with --quantizers 2, --stream alike); `lyra decode
    --subtype FLOAT` writes DAC's audio from those codes."""
    from lyra.audio.container import read_lyra
    from cli_helpers import read, write_wav

    model = build_dac(dac, seed=10)
    save_checkpoint(tmp_path / "dac.pt", imported(model.save(tmp_path / "weights.pth", package=False)))
    wav = write_wav(tmp_path / "in.wav", 25 * HOP + 3, channels=1, subtype="FLOAT", seed=3)
    x, _ = read(wav)
    codes, from_codes, _ = dac_outputs(model, x[None])
    ckpt = tmp_path / "dac.pt"
    runs = lyra_many([("encode", wav, tmp_path / "all.lyra", "-c", ckpt),
                      ("encode", wav, tmp_path / "two.lyra", "-c", ckpt, "--quantizers", "2", "--stream")])
    assert all(done.returncode == 0 for done in runs), [done.stderr for done in runs]
    header, stored, _ = read_lyra(tmp_path / "all.lyra")
    assert header.codes and torch.equal(stored, codes[0])
    assert torch.equal(read_lyra(tmp_path / "two.lyra")[1], dac_outputs(model, x[None], 2)[0][0])
    done = lyra("decode", tmp_path / "all.lyra", tmp_path / "out.wav", "-c", tmp_path / "dac.pt", "--subtype", "FLOAT")
    assert done.returncode == 0, done.stderr
    y, rate = read(tmp_path / "out.wav")
    assert rate == 44100
    torch.testing.assert_close(y, from_codes[0], rtol=1e-5, atol=1e-5 * from_codes.abs().max().item())
