"""Plugins end to end: the example package found through its entry point, its custom op and
blocks, compilation, broken plugins, missing plugins, and train -> save -> encode/decode."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from lyra import registry
from lyra.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from lyra.cli import main
from lyra.model.compilation import is_compiled, stages
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.vae import build_model
from lyra.model.snake import snake_reference as lyra_snake
from plugin_helpers import (  # noqa: F401  (fixtures)
    EXAMPLE, builtins_only, clean_registry, example_distribution, example_plugin, write_distribution)

PLUGIN_CFG = dict(activation="aa_snake", residual_unit="dw_residual_unit", options={"aa_snake": {"aa_taps": 9}})
TINY = dict(base_channels=4, latent_dim=4, c_mults=(1, 2), strides=(4, 4), dilations=(1, 3))


# -- found through the entry point -------------------------------------------------------
def test_example_plugin_is_found_through_its_entry_point(example_plugin):
    import lyra_plugin_example as plugin

    assert registry.get("activation", "aa_snake") is plugin.AntiAliasedSnake
    found = registry.component("residual_unit", "dw_residual_unit")
    assert (found.provider, found.plugin, found.compile_safe) == ("lyra-plugin-example", "example", True)
    [record] = [p for p in registry.plugins(load=False) if p.name == "example"]
    assert record.distribution == example_plugin["name"] and record.version == example_plugin["version"]
    assert record.components == ("activation/aa_snake", "residual_unit/dw_residual_unit")
    assert record.error is None


def test_lyra_plugins_lists_components_by_kind_with_their_package(example_plugin, capsys):
    assert main(["plugins"]) == 0
    table: dict[str, dict[str, list[str]]] = {}
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("  "):
            heading = table.setdefault(line, {})
        else:
            name, *rest = line.split(None, 2)
            heading[name] = rest
    assert list(table) == ["activation", "residual_unit", "encoder_block", "decoder_block", "bottleneck",
                           "discriminator", "plugins (entry-point group 'lyra.plugins')"]
    assert {name: rows for name, rows in table["bottleneck"].items() if name in ("vae", "fsq", "rvq")} == {
        name: ["lyra", "built-in"] for name in ("vae", "fsq", "rvq")}
    assert table["activation"]["aa_snake"] == ["lyra-plugin-example", "plugin 'example'"]
    assert table["activation"]["snake"] == ["lyra", "built-in"]
    assert table["residual_unit"]["dw_residual_unit"] == ["lyra-plugin-example", "plugin 'example'"]
    assert table["encoder_block"] == {"encoder_block": ["lyra", "built-in"]}
    assert table["plugins (entry-point group 'lyra.plugins')"]["example"] == [
        "lyra-plugin-example", "0.1.0  loaded: activation/aa_snake, residual_unit/dw_residual_unit"]


def test_pip_installed_example_is_discovered(tmp_path, monkeypatch):
    """A real `pip install` (offline, into a folder) of a copy of the example package."""
    pytest.importorskip("setuptools")
    source = shutil.copytree(EXAMPLE, tmp_path / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    monkeypatch.syspath_prepend(str(target))
    found = registry.component("activation", "aa_snake")
    assert (found.provider, found.plugin) == ("lyra-plugin-example", "example")


# -- the custom op and the blocks -------------------------------------------------------
def test_custom_op_passes_opcheck_and_matches_the_formula_and_its_gradients(example_plugin):
    from lyra_plugin_example.ops import snake, snake_reference

    torch.manual_seed(1)
    x, la, lb = torch.randn(2, 5, 33), 0.5 * torch.randn(5), 0.5 * torch.randn(5)
    torch.library.opcheck(snake, (x, la, lb))
    args = [t.double().requires_grad_() for t in (x, la, lb)]
    assert torch.autograd.gradcheck(snake, args)
    y = snake(*args)
    torch.testing.assert_close(y, lyra_snake(*args))  # Lyra's own Snake: an independent formula
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, args, g)
    ref = torch.autograd.grad(snake_reference(*args), args, g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # low precision in, same dtype out
        low = snake(x.bfloat16(), la, lb)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), snake_reference(x.bfloat16().float(), la, lb), rtol=2e-2, atol=2e-2)


def test_anti_aliased_snake_matches_snake_on_smooth_input_and_suppresses_aliases(example_plugin):
    torch.manual_seed(2)
    act = registry.create("activation", "aa_snake", channels=3)
    with torch.no_grad():
        act.log_alpha.normal_(0, 0.3)
        act.log_beta.normal_(0, 0.3)
    t = torch.arange(1024.0)
    # Smooth input: every harmonic of sin^2 stays far below Nyquist, so nothing aliases.
    phases = 2 * math.pi * torch.rand(3, 1)
    x = (1.5 * torch.sin(2 * math.pi * 0.01 * t + phases))[None]            # [1, 3, T]
    with torch.no_grad():
        smooth, plain = act(x), lyra_snake(x, act.log_alpha, act.log_beta)
    torch.testing.assert_close(smooth[..., 64:-64], plain[..., 64:-64], rtol=0, atol=5e-3)
    # A tone at 0.35 fs: sin^2 makes 0.70 fs, which folds back to 0.30 fs in plain Snake.
    x = torch.sin(2 * math.pi * 0.35 * t + phases)[None]
    with torch.no_grad():
        aa, plain = act(x)[..., 64:-64], lyra_snake(x, act.log_alpha, act.log_beta)[..., 64:-64]
    window = torch.hann_window(aa.shape[-1], periodic=False)
    spectrum = lambda y: torch.fft.rfft((y - y.mean(-1, keepdim=True)) * window).abs()  # noqa: E731
    alias = round(0.30 * aa.shape[-1])
    assert (spectrum(aa)[..., alias - 2:alias + 3].amax() < 0.02 * spectrum(plain)[..., alias - 2:alias + 3].amax())
    tone = round(0.35 * aa.shape[-1])  # while the tone itself passes
    assert spectrum(aa)[..., tone - 2:tone + 3].amax() > 0.9 * spectrum(plain)[..., tone - 2:tone + 3].amax()


def test_bad_option_value_is_a_one_line_error(example_plugin):
    with pytest.raises(LyraError, match=r"^model\.options\.aa_snake: activation 'aa_snake' \(plugin 'example' "
                                        r"\(lyra-plugin-example\)\): aa_taps: must be an odd integer >= 3, got 8$"):
        build_model(ModelConfig.small(activation="aa_snake", options={"aa_snake": {"aa_taps": 8}}))


def test_streaming_the_plugin_model_equals_offline(example_plugin):
    """The plugin's filters are Conv1d modules, so the streaming codec sizes its overlap for them."""
    from lyra.codec.streaming import decode_stream, encode_stream

    torch.manual_seed(6)
    model = build_model(ModelConfig(**TINY, **PLUGIN_CFG)).eval()  # hop 16: many chunks, cheaply
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "log_alpha"):
                module.log_alpha.normal_(0, 0.5)
    x = torch.randn(2, 16 * 150 + 7)
    with torch.no_grad():
        mean = model.encode(x[None])[0][0]
        audio = model.decode(mean[None], x.shape[-1])[0]
    blocks = [x[:, i:i + 100] for i in range(0, x.shape[-1], 100)]
    streamed = torch.cat(list(encode_stream(model, blocks, chunk_frames=10)), dim=-1)
    torch.testing.assert_close(streamed, mean, rtol=0, atol=1e-5)
    latents = [mean[:, i:i + 7] for i in range(0, mean.shape[-1], 7)]
    decoded = torch.cat(list(decode_stream(model, latents, chunk_frames=10, length=x.shape[-1])), dim=-1)
    torch.testing.assert_close(decoded, audio, rtol=0, atol=1e-5)


# -- compilation ------------------------------------------------------------------------
def test_plugin_block_compiles_with_fullgraph(example_plugin):
    """The custom op (fake kernel + autograd) lets inductor take the whole block, fwd and bwd."""
    torch.manual_seed(3)
    with registry.component_options({"aa_snake": {"aa_taps": 9}}):   # as a model build gives them
        unit = registry.create("residual_unit", "dw_residual_unit", channels=6, dilation=3, activation="aa_snake")
    assert unit.act1.decimate.kernel_size == (9,)
    compiled = torch.compile(unit, fullgraph=True)
    x = torch.randn(2, 6, 50, requires_grad=True)
    out = compiled(x)
    ref = unit(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    ours = torch.autograd.grad(out.square().sum(), [x, *unit.parameters()])
    theirs = torch.autograd.grad(ref.square().sum(), [x, *unit.parameters()])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compile_switch_compiles_plugin_blocks(example_plugin):
    torch.manual_seed(4)
    cfg = ModelConfig(**TINY, **PLUGIN_CFG)
    eager = build_model(cfg).eval()
    compiled = build_model(cfg)
    compiled.load_state_dict(eager.state_dict())
    # fullgraph (the default): a graph break anywhere in a plugin block (the custom op included) is an error
    compiled.eval().compile(backend="aot_eager")
    assert all(is_compiled(stage) for stage in stages(compiled).values())
    x = torch.randn(2, 2, 16 * 8 + 5)
    with torch.no_grad():
        ref = eager.decode(eager.encode(x)[0], x.shape[-1])
        out = compiled.decode(compiled.encode(x)[0], x.shape[-1])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_blocks_holding_a_component_that_is_not_compile_safe_stay_eager(capsys):
    class Untraceable(torch.nn.Module):
        def __init__(self, channels, **_):
            super().__init__()

        def forward(self, x):
            return torch.from_numpy(x.detach().numpy().clip(-1, 1))  # not traceable

    registry.register("activation", "clip_numpy", Untraceable, compile_safe=False)
    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^  clip_numpy .*\(not compile-safe, not streamable\)$", listing, re.M)
    assert re.search(r"^  snake  +lyra +built-in$", listing, re.M)          # built-ins: both, so no flag
    model = build_model(ModelConfig(**TINY, activation="clip_numpy"))
    with pytest.warns(RuntimeWarning, match=r"^6 of 6 stages left eager \(encoder\.blocks\.0, .*, decoder\.act_out\): "
                                            r"they hold activation 'clip_numpy' \(package '.*'\), registered as not "
                                            r"compile-safe$"):
        model.compile()
    assert not any(is_compiled(stage) for stage in stages(model).values())

    registry.register("activation", "clip_numpy", Untraceable, override=True)  # now claims safe
    assert all(is_compiled(stage) for stage in
               stages(build_model(ModelConfig(**TINY, activation="clip_numpy"), compile=True)).values())


# -- broken plugins ---------------------------------------------------------------------
BROKEN = {
    "crash": ("""
        import missing_dependency_of_crash
        def register(registry):
            pass
        """, r"ModuleNotFoundError: No module named 'missing_dependency_of_crash'"),
    "taken": ("""
        from torch import nn
        class Mine(nn.Identity):
            def __init__(self, channels, **_):
                super().__init__()
        def register(registry):
            registry.register("activation", "taken_first", Mine)      # rolled back with the rest
            registry.register("activation", "snake", Mine, override=True)
        """, r"activation 'snake' is already registered by lyra \(built-in\); a plugin cannot "
             r"replace a registered component; choose another name"),
    "notmodule": ("""
        class NotAModule:
            def __init__(self, channels, **_):
                pass
        def register(registry):
            registry.register("activation", "notmodule_first", NotAModule)
        """, r"cannot register activation 'notmodule_first': class NotAModule is not an nn.Module subclass"),
}


def install_broken(tmp_path, monkeypatch, which: str) -> str:
    source, _ = BROKEN[which]
    module = f"lyra_{which}_plugin_{tmp_path.name}"
    monkeypatch.syspath_prepend(str(write_distribution(
        tmp_path / "broken", f"lyra-plugin-{which}", "1.0", {which: f"{module}:register"},
        {f"{module}.py": source})))
    return module


@pytest.mark.parametrize("which", sorted(BROKEN))
def test_broken_plugin_is_reported_by_name_and_the_rest_keeps_working(which, example_plugin, tmp_path,
                                                                       monkeypatch, capsys):
    install_broken(tmp_path, monkeypatch, which)
    expected = rf"plugin '{which}' \(lyra-plugin-{which} 1\.0\): {BROKEN[which][1]}"

    # The example plugin, loaded in the same pass, works; the broken one left nothing behind.
    assert registry.component("activation", "aa_snake").plugin == "example"
    [failed] = registry.failed_plugins()
    assert failed.label == f"plugin '{which}' (lyra-plugin-{which} 1.0)" and "\n" not in failed.error
    assert re.fullmatch(expected, f"{failed.label}: {failed.error}")
    assert not any(c.plugin == which for c in registry.list_components(load_plugins=False))
    assert registry.REGISTRY.components["activation"]["snake"].provider == "lyra"

    # Built-ins and the good plugin still build; naming a missing component shows the failure.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(ModelConfig.small())
    contested = [str(w.message) for w in caught if "also registers that name" in str(w.message)]
    assert bool(contested) == (which == "taken")  # a warning only where the failure matters
    build_model(ModelConfig(**TINY, **PLUGIN_CFG))
    with pytest.raises(LyraError, match=rf"^model\.activation: unknown activation '{which}_first'.*"
                                        rf"plugins loaded: example.*plugins that failed to load: {expected}$"):
        build_model(ModelConfig.small(activation=f"{which}_first"))

    # `lyra plugins` shows it, one line, and exits non-zero.
    assert main(["plugins"]) == 1
    out, err = capsys.readouterr()
    assert re.search(rf"^  {which} +lyra-plugin-{which} 1\.0 +FAILED: {BROKEN[which][1]}$", out, re.M)
    assert err.strip() == f"lyra: error: 1 plugin(s) failed to load: {which} (see above)"


def test_broken_plugin_does_not_load_when_the_config_uses_only_builtins(tmp_path, monkeypatch):
    module = install_broken(tmp_path, monkeypatch, "crash")
    model = build_model(ModelConfig.small())
    assert model.encode(torch.randn(1, 2, 100))[0].shape == (1, 16, 1)
    assert registry.REGISTRY.plugins_loaded is False and module not in sys.modules


def test_function_factory_that_builds_no_module_fails_at_build_naming_the_plugin(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_distribution(
        tmp_path, "lyra-plugin-tensor", "2.0", {"tensor": "lyra_tensor_plugin:register"},
        {"lyra_tensor_plugin.py": """
            import torch
            def register(registry):
                registry.register("activation", "tensor_act", lambda channels, **_: torch.zeros(channels))
            """})))
    with pytest.raises(LyraError, match=r"^model\.activation: activation 'tensor_act' from plugin 'tensor' "
                                        r"\(lyra-plugin-tensor\) built a Tensor, not an nn.Module"):
        build_model(ModelConfig.small(activation="tensor_act"))


def test_plugin_contesting_another_plugins_name_fails_and_a_warning_names_it(example_plugin, tmp_path,
                                                                              monkeypatch):
    monkeypatch.syspath_prepend(str(write_distribution(
        tmp_path, "lyra-plugin-rival", "3.0", {"rival": "lyra_rival_plugin:register"},
        {"lyra_rival_plugin.py": """
            from torch import nn
            def register(registry):
                registry.register("activation", "aa_snake", nn.Identity)
            """})))
    with pytest.warns(RuntimeWarning, match=r"activation 'aa_snake' comes from plugin 'example' \(lyra-plugin-example\); "
                                            r"plugin 'rival' \(lyra-plugin-rival 3\.0\) also registers that name"):
        registry.component("activation", "aa_snake")
    [failed] = registry.failed_plugins()
    assert failed.contested == "activation/aa_snake"
    assert failed.error.startswith("activation 'aa_snake' is already registered by plugin 'example'")


# -- missing plugins --------------------------------------------------------------------
def test_checkpoint_without_its_plugin_names_the_component_and_package(tmp_path, monkeypatch):
    path = tmp_path / "plugin.ckpt"
    with monkeypatch.context() as installed:
        installed.syspath_prepend(str(EXAMPLE / "src"))
        installed.syspath_prepend(str(example_distribution(tmp_path / "site")))
        save_checkpoint(path, build_model(ModelConfig.small(**PLUGIN_CFG)))
    assert read_checkpoint(path)["providers"]["activation/aa_snake"] == "lyra-plugin-example"
    builtins_only()  # uninstalled
    with pytest.raises(LyraError, match=rf"^{path}: the model uses activation 'aa_snake' from package "
                                        r"'lyra-plugin-example', which is not installed or not registered; "
                                        r"install it \(pip install lyra-plugin-example\) and retry$"):
        load_model(path)

    # Installed but broken: the message says so instead of "install it".
    builtins_only()
    monkeypatch.syspath_prepend(str(write_distribution(
        tmp_path / "broken", "lyra-plugin-example", "0.1.1", {"example": "lyra_example_gone:register"})))
    with pytest.raises(LyraError, match=r"'lyra-plugin-example', which is installed but its plugin 'example' "
                                        r"\(lyra-plugin-example 0\.1\.1\) failed to load: ModuleNotFoundError: "
                                        r"No module named 'lyra_example_gone'$"):
        load_model(path)


def test_training_config_naming_an_unknown_component_fails_with_the_registry_message(example_plugin, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[model]\nactivation = "aa_snak"\n')
    with pytest.raises(LyraError, match=r"^model\.activation: unknown activation 'aa_snak' \(did you mean "
                                        r"'aa_snake'\?\); registered: aa_snake, dac_snake, snake, snake_reference; plugins loaded: example"):
        build_model(ModelConfig.from_toml(cfg))


# -- end to end -------------------------------------------------------------------------
def test_train_save_encode_decode_with_the_plugin(example_plugin, tmp_path):
    """A few optimiser steps with plugin blocks, a checkpoint, and the codec from that
    checkpoint in a registry that has to discover the plugin again."""
    from lyra_plugin_example import AntiAliasedSnake, DepthwiseResidualUnit

    torch.manual_seed(5)
    model = build_model(ModelConfig(**TINY, **PLUGIN_CFG))
    assert isinstance(model.encoder.blocks[0].res[0], DepthwiseResidualUnit)
    assert isinstance(model.decoder.blocks[-1].act, AntiAliasedSnake)
    x = 0.5 * torch.randn(2, 2, 16 * 64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        recon, mean, logvar = model(x)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
        loss = (recon - x).abs().mean() + 1e-3 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    act = model.encoder.blocks[0].act
    assert act.log_alpha.abs().max() > 0 and act.log_beta.abs().max() > 0  # the op's backward reached them

    path = tmp_path / "model.ckpt"
    save_checkpoint(path, model)
    builtins_only()  # a new process: the plugin is found again through its entry point
    loaded = load_model(path)
    assert registry.component("activation", "aa_snake").plugin == "example"
    model.eval()
    with torch.no_grad():
        mean, _ = loaded.encode(x[:, :, :1000])
        audio = loaded.decode(mean, 1000)
        ref = model.decode(model.encode(x[:, :, :1000])[0], 1000)
    assert mean.shape == (2, 4, 63) and audio.shape == (2, 2, 1000)
    torch.testing.assert_close(audio, ref, rtol=0, atol=0)


CLI_RUN = ["model.base_channels=4", "model.latent_dim=4", "model.c_mults=[1, 2]", "model.strides=[4, 4]",
           "model.dilations=[1, 3]", "model.options.aa_snake.aa_taps=9", "data.segment_length=4096",
           "data.batch_size=2", "data.num_workers=0", "data.val_fraction=0.34", "data.val_clips=1",
           "optim.max_steps=3", "optim.warmup_steps=0", "loss.fft_sizes=[512, 256]", "loss.hop_sizes=[128, 64]",
           "loss.win_lengths=[512, 256]", "runtime.device='cpu'", "runtime.precision='fp32'",
           "logging.eval_every=3", "logging.val_audio=0", "logging.progress='off'", "checkpoint.save_every=3"]


def test_cli_train_encode_decode_with_the_plugin_and_without_it(example_plugin, tmp_path, capsys):
    """`lyra train` on the example's own cfg.toml (scaled down with --set), then `lyra encode`
    and `lyra decode` with the checkpoint; then, in a process without the plugin, the message."""
    import soundfile as sf

    from lyra.audio.reading import load_audio
    from lyra.audio.container import read_lyra

    rng = np.random.default_rng(7)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):  # fresh random audio, 0.3 s each
        sf.write(data / f"clip{i}.wav", (0.3 * rng.standard_normal((13230, 2))).astype(np.float32), 44100)
    run = tmp_path / "run"
    sets = [f"run_dir='{run}'", f"data.train_dir='{data}'", *CLI_RUN]
    assert main(["train", str(EXAMPLE / "cfg.toml"), *(a for v in sets for a in ("--set", v))]) == 0, capsys.readouterr().err
    ckpt = run / "latest.pt"
    assert read_checkpoint(ckpt)["providers"]["activation/aa_snake"] == "lyra-plugin-example"
    assert read_checkpoint(ckpt)["providers"]["residual_unit/dw_residual_unit"] == "lyra-plugin-example"

    wav, lat, streamed, back = (tmp_path / n for n in ("in.wav", "out.lyra", "stream.lyra", "back.wav"))
    sf.write(wav, (0.3 * rng.standard_normal((5000, 2))).astype(np.float32), 44100)
    common = ["--checkpoint", str(ckpt), "--device", "cpu"]
    assert main(["encode", str(wav), str(lat), *common, "--dtype", "float32"]) == 0
    assert main(["encode", str(wav), str(streamed), *common, "--dtype", "float32", "--stream",
                 "--chunk-seconds", "0.01"]) == 0
    assert main(["decode", str(lat), str(back), *common, "--subtype", "FLOAT"]) == 0

    model = load_model(ckpt)
    x, _ = load_audio(wav, 44100, 2)
    with torch.no_grad():
        mean = model.encode(x[None])[0][0]
        ref = model.decode(mean[None], x.shape[-1])[0]
    _, latents, _ = read_lyra(lat)
    torch.testing.assert_close(latents, mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(read_lyra(streamed)[1], mean, rtol=0, atol=1e-5)
    audio, rate = sf.read(back, dtype="float32", always_2d=True)
    assert rate == 44100
    torch.testing.assert_close(torch.from_numpy(audio.T), ref, rtol=0, atol=1e-5)

    # A fresh process where the plugin is not installed (nothing of it on the path).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", registry.AUTOLOAD_ENV)}
    done = subprocess.run([sys.executable, "-m", "lyra", "decode", str(lat), str(tmp_path / "x.wav"), *common],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"lyra: error: {ckpt}: the model uses activation 'aa_snake' from package "
                           "'lyra-plugin-example', which is not installed or not registered; install it "
                           "(pip install lyra-plugin-example) and retry\n")
    assert not (tmp_path / "x.wav").exists()


def test_example_cfg_toml_names_the_plugin_components(example_plugin):
    from lyra.train.config import TrainConfig

    cfg = TrainConfig.load(EXAMPLE / "cfg.toml")
    assert (cfg.model.activation, cfg.model.residual_unit) == ("aa_snake", "dw_residual_unit")
    assert cfg.model.options == {"aa_snake": {"aa_taps": 25}} and cfg.model.block_options == {}
    model = build_model(cfg.model)
    assert {c.provider for m in model.modules() for c in getattr(m, "_lyra_components", ())} == {
        "lyra", "lyra-plugin-example"}
    from lyra_plugin_example import AntiAliasedSnake

    taps = {m.decimate.kernel_size for m in model.modules() if isinstance(m, AntiAliasedSnake)}
    assert taps == {(25,)}   # every aa_snake got its option, the ones inside dw_residual_unit too
