"""`lyra import stable-audio-tools` against stable-audio-tools' own Oobleck code.

stable-audio-tools (the release pinned in the Makefile, installed with --no-deps) builds its
own `OobleckEncoder` / `OobleckDecoder` / `VAEBottleneck` through its own factory, with random
weights (weight norm's magnitude and direction drawn independently, Snake's log-parameters
off zero), and saves them the three ways its users have them. Lyra imports each file and must
give the same posterior mean, the same spread and the same decoded audio, within float32
rounding. `tools/stable_audio_reference.py` loads that code (standing in for the unrelated
modules its autoencoder module imports at top level, which need gigabytes of dependencies).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cli_helpers import lyra
from lyra.model.checkpoint import load_model
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.importers import stable_audio_tools as importer
from lyra.codec.streaming import decode_stream, encode_stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import stable_audio_reference as reference  # noqa: E402  (tools/: shared with tools/sat_bench.py)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

WIDTH, MULTS, STRIDES, LATENT = 4, [1, 2, 4], [2, 4, 4], 6     # hop 32
HOP = 32


@pytest.fixture(scope="module")
def sat():
    """stable-audio-tools' autoencoder module (and its factory), the real code."""
    before = set(sys.modules)
    try:
        autoencoders = reference.load()
    except ImportError as exc:   # an honest failure, not a skip: `make setup` installs it
        pytest.fail(f"stable-audio-tools is not installed ({exc}); run `make setup`")
    yield autoencoders
    for name in reference.STANDINS:
        if name not in before:
            sys.modules.pop(name, None)


def sat_config(final_tanh: bool = False, **decoder: object) -> dict:
    return reference.config(WIDTH, MULTS, STRIDES, LATENT, final_tanh, **decoder)


def build_sat(sat, config: dict, seed: int) -> nn.Module:
    return reference.build(sat, config, seed)


sat_outputs = reference.outputs


def lyra_outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        mean, logvar = model.encode(x)
        return mean, torch.exp(0.5 * logvar), model.decode(mean)


def assert_same(ours, theirs) -> None:
    for a, b, what in zip(ours, theirs, ("mean", "sigma", "decoded audio")):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


# -- the three files stable-audio-tools users have ---------------------------------------
def save_training_checkpoint(model: nn.Module, path: Path) -> Path:
    """A Lightning checkpoint of stable-audio-tools' autoencoder training wrapper: the model
    under ``autoencoder.``, a discriminator beside it, optimiser states and loop bookkeeping."""
    wrapper = nn.Module()
    wrapper.autoencoder = model
    wrapper.discriminator = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 1, 3))
    opt = torch.optim.AdamW(model.parameters())
    torch.save({"epoch": 2, "global_step": 500, "pytorch-lightning_version": "2.1.0",
                "state_dict": wrapper.state_dict(), "optimizer_states": [opt.state_dict()],
                "lr_schedulers": [], "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 2}}}}}, path)
    return path


def save_unwrapped(model: nn.Module, path: Path) -> Path:
    """What stable-audio-tools' unwrap_model.py writes: the bare autoencoder's state dict."""
    if path.suffix == ".safetensors":
        save_file(model.state_dict(), str(path))
    else:
        torch.save({"state_dict": model.state_dict()}, path)
    return path


def save_full_model(model: nn.Module, path: Path) -> Path:
    """A Stable Audio Open style model.safetensors: the VAE as the diffusion model's
    pretransform (``pretransform.model.``), beside a (tiny) diffusion network; weight norm in
    torch's newer parametrization form (``parametrizations.weight.original0/1``)."""
    for module in model.modules():
        if hasattr(module, "weight_g"):
            torch.nn.utils.remove_weight_norm(module)
            torch.nn.utils.parametrizations.weight_norm(module)
    full = nn.Module()
    full.pretransform = nn.Module()
    full.pretransform.model = model
    full.model = nn.Sequential(nn.Linear(LATENT, 8), nn.Linear(8, LATENT))
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def audio() -> torch.Tensor:
    return 0.5 * torch.randn(2, 2, 12 * HOP, generator=torch.Generator().manual_seed(7))


# -- equivalence ------------------------------------------------------------------------------
def test_training_checkpoint_through_the_cli_equals_stable_audio_tools(sat, audio, tmp_path):
    config = sat_config(final_tanh=True)
    model = build_sat(sat, config, seed=1)
    src = save_training_checkpoint(model, tmp_path / "last.ckpt")
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    done = lyra("import", "stable-audio-tools", src, tmp_path / "vae.pt", "--config", tmp_path / "model_config.json")
    assert done.returncode == 0, done.stderr
    assert "final tanh on" in done.stdout.decode()
    ours = load_model(tmp_path / "vae.pt")
    assert ours.config.final_tanh and ours.config.posterior == "softplus"
    # Every tensor imported once: stable-audio-tools' parameters less weight norm's magnitudes.
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for n, p in model.named_parameters() if not n.endswith("weight_g"))
    assert_same(lyra_outputs(ours, audio), sat_outputs(model, audio))


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_unwrapped_model_equals_stable_audio_tools(sat, audio, tmp_path, suffix):
    model = build_sat(sat, sat_config(), seed=2)
    src = save_unwrapped(model, tmp_path / f"vae{suffix}")
    found = importer.import_vae(src, final_tanh=False)
    assert found.prefix == "" and found.folded == 2 + 2 + len(STRIDES) * 2 * (1 + 3 * 2)
    ours = _model(found)
    assert_same(lyra_outputs(ours, audio), sat_outputs(model, audio))


def test_full_stable_audio_open_file_with_parametrized_weight_norm(sat, audio, tmp_path):
    model = build_sat(sat, sat_config(), seed=3)
    before = sat_outputs(model, audio)
    src = save_full_model(model, tmp_path / "model.safetensors")
    expected = sat_outputs(model, audio)                   # the model as saved
    assert_same(expected, before)                          # re-parametrising changed it by rounding only
    found = importer.import_vae(src)                       # no --config: Stable Audio Open 1.0's choices
    assert found.prefix == "pretransform.model." and not found.config.final_tanh
    assert_same(lyra_outputs(_model(found), audio), expected)


def _model(found: importer.Imported):
    from lyra.model.vae import build_model

    model = build_model(found.config).eval()
    model.load_state_dict(found.weights)
    return model


# -- a wrong mapping or option is caught -------------------------------------------------------
def test_a_swapped_key_or_a_wrong_option_breaks_equivalence(sat, audio, tmp_path, monkeypatch):
    """The comparison above is sensitive: swapping two same-shaped weights in the key map, or
    importing with the wrong tanh choice, makes Lyra's output differ from stable-audio-tools'."""
    model = build_sat(sat, sat_config(final_tanh=False), seed=4)
    expected = sat_outputs(model, audio)
    src = save_unwrapped(model, tmp_path / "vae.ckpt")

    wrong_tanh = _model(importer.import_vae(src, final_tanh=True))
    with pytest.raises(AssertionError, match="decoded audio"):
        assert_same(lyra_outputs(wrong_tanh, audio), expected)

    right = importer.key_map
    def swapped(config: ModelConfig) -> dict[str, str]:
        paths = right(config)
        a, b = "decoder.blocks.1.res.0.conv1", "decoder.blocks.1.res.1.conv1"
        paths[a], paths[b] = paths[b], paths[a]
        return paths
    monkeypatch.setattr(importer, "key_map", swapped)
    with pytest.raises(AssertionError, match="decoded audio"):
        assert_same(lyra_outputs(_model(importer.import_vae(src, final_tanh=False)), audio), expected)


def test_anything_unmappable_is_refused_whole(sat, tmp_path):
    model = build_sat(sat, sat_config(), seed=5)
    state = model.state_dict()

    def refused(weights: dict, match: str, **kwargs) -> None:
        path = tmp_path / "bad.safetensors"
        save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
        with pytest.raises(LyraError, match=match):
            importer.import_vae(path, final_tanh=False, **kwargs)

    refused({**state, "encoder.layers.1.layers.0.extra": torch.zeros(3)}, "cannot map encoder.layers.1.layers.0.extra")
    refused({k: v for k, v in state.items() if k != "decoder.layers.2.layers.3.layers.2.beta"},
            r"no decoder\.layers\.2\.layers\.3\.layers\.2\.beta")
    refused({k: v for k, v in state.items() if k != "encoder.layers.0.weight_g"}, "half a weight norm")
    refused({k.replace("encoder.", "enc."): v for k, v in state.items()}, "no stable-audio-tools Oobleck VAE found")
    # Anti-aliased Snake (alias-free-torch's filters) is another model: refused, not half-imported.
    aa = build_sat(sat, sat_config(antialias_activation=True), seed=5)
    refused(aa.state_dict(), "cannot map")
    # Without --config or a tanh flag, an autoencoder checkpoint's tanh is unknown: asked, not guessed.
    path = save_unwrapped(model, tmp_path / "plain.ckpt")
    with pytest.raises(LyraError, match="--final-tanh"):
        importer.import_vae(path)


def test_config_json_is_checked_against_the_weights(sat, tmp_path):
    model = build_sat(sat, sat_config(), seed=6)
    src = save_unwrapped(model, tmp_path / "vae.ckpt")
    wrong = sat_config()
    wrong["model"]["encoder"]["config"]["strides"] = [2, 4, 8]
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(LyraError, match=r"encoder.strides is \[2, 4, 8\], but the weights have \[2, 4, 4\]"):
        importer.import_vae(src, tmp_path / "wrong.json")
    elu = sat_config()
    elu["model"]["decoder"]["config"]["use_snake"] = False
    (tmp_path / "elu.json").write_text(json.dumps(elu))
    done = lyra("import", "stable-audio-tools", src, tmp_path / "out.pt", "--config", tmp_path / "elu.json")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "ELU" in done.stderr
    assert not (tmp_path / "out.pt").exists()


# -- the rest of Lyra on the imported model ------------------------------------------------------
def test_imported_model_streams_and_compiles_like_any_lyra_model(sat, tmp_path):
    model = build_sat(sat, sat_config(final_tanh=True), seed=8)
    ours = _model(importer.import_vae(save_unwrapped(model, tmp_path / "vae.ckpt"), final_tanh=True))
    x = 0.5 * torch.randn(2, 40 * HOP + 5, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        mean = ours.encode(x[None])[0][0]
        whole = ours.decode(mean[None], x.shape[-1])[0]
        streamed_z = torch.cat(list(encode_stream(ours, x.split(97, dim=-1), 4)), dim=-1)
        streamed = torch.cat(list(decode_stream(ours, streamed_z.split(3, dim=-1), 5, length=x.shape[-1])), dim=-1)
    torch.testing.assert_close(streamed_z, mean, rtol=1e-5, atol=1e-5 * mean.abs().max().item())
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())

    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    compiled = _model(importer.import_vae(tmp_path / "vae.ckpt", final_tanh=True)).compile(backend="aot_eager")
    with torch.inference_mode():
        z = compiled.encode(x[None])[0]
        y = compiled.decode(z, x.shape[-1])
    assert not counters["graph_break"]
    torch.testing.assert_close(z[0], mean, rtol=1e-5, atol=1e-5 * mean.abs().max().item())
    torch.testing.assert_close(y[0], whole, rtol=1e-5, atol=1e-5 * whole.abs().max().item())
    torch._dynamo.reset()


def test_fine_tuning_the_imported_model_resumes_exactly(sat, tmp_path):
    """`lyra train --init-from IMPORTED --freeze-encoder`, stopped after 2 steps and resumed to 4,
    gives the losses and weights of a run never stopped; the encoder stays stable-audio-tools'."""
    import lyra.train.engine as engine
    from lyra.model.checkpoint import read_checkpoint, save_checkpoint
    from lyra.train.config import TrainConfig
    from lyra.train.metrics_log import read_metrics
    from train_helpers import make_data, tiny_config_dict

    model = build_sat(sat, sat_config(), seed=10)
    imported = _model(importer.import_vae(save_unwrapped(model, tmp_path / "vae.ckpt"), final_tanh=False))
    save_checkpoint(tmp_path / "sao.pt", imported)
    make_data(tmp_path)

    def run(name: str, *stops: int) -> tuple[list[float], dict]:
        data = tiny_config_dict(tmp_path, run_dir=str(tmp_path / name))
        data["model"] = imported.config.to_dict()            # as configs/stable-audio-open-vae.toml does
        cfg = TrainConfig.from_mapping(data)
        engine.train(cfg, init_from=tmp_path / "sao.pt", freeze_encoder=True, until_step=stops[0])
        for stop in stops[1:]:
            engine.train(cfg, resume=True, until_step=stop)
        losses = [r["loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl") if r["split"] == "train"]
        return losses, read_checkpoint(tmp_path / name / "latest.pt")["model"]

    straight, weights = run("straight", 4)
    resumed, weights_resumed = run("resumed", 2, 4)
    assert len(straight) == 4 and straight == resumed
    assert all(torch.equal(weights[k], weights_resumed[k]) for k in weights)
    before = imported.state_dict()
    assert all(torch.equal(weights[k], before[k]) for k in weights if k.startswith("encoder."))
    assert all(not torch.equal(weights[k], before[k]) for k in weights if k.startswith("decoder.conv_out"))


def test_shipped_config_is_stable_audio_open_1_0(sat):
    """configs/stable-audio-open-vae.toml's [model] is what importing SAO 1.0 gives: stable-audio-
    tools builds its published config (on the meta device: shapes only), Lyra imports the result."""
    from lyra.train.config import TrainConfig, commented_toml

    with torch.device("meta"):
        full = sat.create_autoencoder_from_config(reference.STABLE_AUDIO_OPEN_1_0)
    weights, folded = importer.fold_weight_norm(dict(full.state_dict()), "sao")
    config = importer.infer_config(weights, None, None, full_model=True, source="sao")
    assert importer.map_weights(weights, config, "sao").keys() == _state_keys(config)
    path = Path(__file__).resolve().parents[1] / "configs" / "stable-audio-open-vae.toml"
    shipped = TrainConfig.load(path)
    assert shipped.model == config
    with torch.device("meta"):
        assert sum(p.numel() for p in _build(config).parameters()) == 156_077_696
    text = path.read_text()
    header = "\n".join(line[2:] for line in text.split("\n\n")[0].splitlines())
    assert commented_toml(shipped, header) == text          # written by `lyra config init`'s writer


def _build(config: ModelConfig):
    from lyra.model.vae import build_model

    return build_model(config)


def _state_keys(config: ModelConfig) -> set[str]:
    with torch.device("meta"):
        return set(_build(config).state_dict())
