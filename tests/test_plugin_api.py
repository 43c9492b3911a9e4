"""The plugin API as a third-party author meets it: per-component options, the checks a build
makes (arguments, options, what a factory returns, shapes), `lyra config show` validating
component names and options (through the `lyra` CLI), and the message for a plugin checkpoint
with autoloading off. Every error is one line naming the config key and the component."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import lyra.model.build_checks
import lyra.model.vae
from lyra import registry
from lyra.model.checkpoint import LATER_OPTIONS, fingerprint_config, load_model, model_fingerprint, save_checkpoint
from lyra.cli import main
from lyra.core.toml import from_dict
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError
from lyra.model.vae import build_model

from cli_helpers import lyra_env, lyra_many
from plugin_helpers import builtins_only, clean_registry, write_distribution  # noqa: F401  (autouse fixture)

TINY = dict(base_channels=4, latent_dim=4, c_mults=(1, 2), strides=(4, 4), dilations=(1, 3))
TINY_TOML = "base_channels = 4\nlatent_dim = 4\nc_mults = [1, 2]\nstrides = [4, 4]\ndilations = [1, 3]\n"

# A third-party plugin: two activations that both take a `gain` option (a flat table would give
# both the same value), a residual unit that passes nothing down and builds a second activation
# by a name of its own, and components that break their contracts.
GATES = """
    import torch
    from torch import nn
    from lyra.model.blocks import EncoderBlock

    class SineGate(nn.Module):
        def __init__(self, channels, *, gain=1.0):
            super().__init__()
            if gain <= 0:
                from lyra.registry import OptionError
                raise OptionError("gain", f"must be positive, got {gain!r}")
            self.gain = gain

        def forward(self, x):
            return x * torch.sigmoid(self.gain * torch.sin(x))

    class TanhGate(SineGate):
        def forward(self, x):
            return x * torch.tanh(self.gain * x)

    class Noisy(nn.Module):                             # draws random numbers when it runs
        def __init__(self, channels):
            super().__init__()

        def forward(self, x):
            return x + 0 * torch.randn_like(x)

    class Plain(nn.Module):
        def __init__(self, channels):
            super().__init__()

        def forward(self, x):
            return torch.tanh(x)

    class QuietUnit(nn.Module):
        # builds its activations without passing anything down, and a tanh_gate of its own
        def __init__(self, channels, dilation=1, kernel_size=7, activation="snake"):
            super().__init__()
            from lyra import registry
            self.act = registry.create("activation", activation, channels=channels)
            self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                                  padding=dilation * (kernel_size - 1) // 2)
            self.gate = registry.create("activation", "tanh_gate", channels=channels)

        def forward(self, x):
            return x + self.gate(self.conv(self.act(x)))

    class Shrinking(QuietUnit):
        def forward(self, x):
            return super().forward(x)[..., 1:]          # loses a sample

    class Crashing(QuietUnit):
        def forward(self, x):
            return x + torch.ones(3)

    class Widening(EncoderBlock):                       # one output channel too many
        def __init__(self, in_channels, out_channels, stride, **block_options):
            super().__init__(in_channels, out_channels + 1, stride, **block_options)

    class NoResidualUnit(nn.Module):                    # forgot an argument every encoder block gets
        def __init__(self, in_channels, out_channels, stride, dilations, kernel_size, activation):
            super().__init__()

    def register(registry):
        registry.register("activation", "sine_gate", SineGate, streamable=True)
        registry.register("activation", "tanh_gate", TanhGate, streamable=True)
        registry.register("activation", "plain", Plain, streamable=True)
        registry.register("activation", "noisy", Noisy, streamable=True)
        registry.register("activation", "tensor_act", lambda channels: torch.zeros(channels))
        registry.register("residual_unit", "quiet_unit", QuietUnit, streamable=True)
        registry.register("residual_unit", "shrinking", Shrinking)
        registry.register("residual_unit", "crashing", Crashing)
        registry.register("encoder_block", "widening", Widening)
        registry.register("encoder_block", "no_residual_unit", NoResidualUnit)
"""
ORIGIN = "plugin 'gates' (lyra-plugin-gates)"
ORIGIN_RE = re.escape(ORIGIN)


@pytest.fixture
def gates(tmp_path, monkeypatch) -> Path:
    """The plugin 'installed' (found through its entry point); returns the folder to put on PYTHONPATH."""
    site = write_distribution(tmp_path / "site", "lyra-plugin-gates", "1.0", {"gates": "lyra_gates_plugin:register"},
                              {"lyra_gates_plugin.py": GATES})
    monkeypatch.syspath_prepend(str(site))
    return site


def built(model: torch.nn.Module, name: str) -> list[torch.nn.Module]:
    return [m for m in model.modules() if any(c.name == name for c in registry.built_by(m))]


# -- per-component options ---------------------------------------------------------------
def test_options_reach_their_component_only_wherever_it_is_built(gates):
    model = build_model(ModelConfig(**TINY, activation="sine_gate", residual_unit="quiet_unit",
                                    options={"sine_gate": {"gain": 3.0}, "tanh_gate": {"gain": 0.5}}))
    sine, tanh = built(model, "sine_gate"), built(model, "tanh_gate")
    assert len(sine) == 8 + 4 + 2 and len(tanh) == 8   # 2 units in each of 4 blocks, each block's own, act_out
    assert {m.gain for m in sine} == {3.0} and {m.gain for m in tanh} == {0.5}   # same key, own values
    assert type(model.encoder.act_out).__name__ == "SineGate"


def test_a_rejected_option_is_one_line_naming_the_component_and_the_key(gates):
    cases = [
        (dict(activation="sine_gate", options={"sine_gate": {"gian": 2.0}}),
         rf"model\.options\.sine_gate: activation 'sine_gate' \({ORIGIN_RE}\) does not accept option 'gian' "
         r"\(its options: gain\)"),
        (dict(options={"snake": {"gain": 2.0}}),     # built-ins take no options (their **kwargs does not count)
         r"model\.options\.snake: activation 'snake' \(lyra \(built-in\)\) does not accept option 'gain' "
         r"\(it takes no options\)"),
        (dict(activation="sine_gate", options={"sine_gate": {"channels": 3}}),
         rf"model\.options\.sine_gate: activation 'sine_gate' \({ORIGIN_RE}\): 'channels' is set by the model for "
         r"every activation, it is not an option"),
        (dict(activation="sine_gate", options={"sine_gate": {"gain": -1.0}}),   # the factory's OptionError
         rf"model\.options\.sine_gate: activation 'sine_gate' \({ORIGIN_RE}\): gain: must be positive, got -1\.0"),
        (dict(options={"sine_gat": {"gain": 2.0}}),
         r"model\.options\.sine_gat: no component is registered as 'sine_gat' \(did you mean 'sine_gate'\?\); "
         r"registered: .*; plugins loaded: gates"),
        (dict(options={"sine_gate": {"gain": 2.0}}),   # registered, but this model has none: not silently lost
         r"model\.options\.sine_gate: this model builds no component named 'sine_gate' \(it builds decoder_block, "
         r"encoder_block, residual_unit, snake, vae\)"),
        # The deprecated flat table goes to every component, which must take it: now a line, not a TypeError.
        (dict(activation="plain", block_options={"gain": 2.0}),
         rf"model\.block_options: activation 'plain' \({ORIGIN_RE}\) does not accept option 'gain' \(it takes no "
         r"options\); block_options go to every component and are deprecated: set each option in its "
         r"component's table, \[model\.options\.<name>\]"),
    ]
    for cfg, message in cases:
        with pytest.raises(LyraError) as info:
            build_model(ModelConfig(**TINY, **cfg))
        assert re.fullmatch(message, str(info.value)), (cfg, str(info.value))


def test_the_deprecated_block_options_still_reach_every_component(gates):
    model = build_model(ModelConfig(**TINY, activation="sine_gate", block_options={"gain": 2.0}))
    assert {m.gain for m in built(model, "sine_gate")} == {2.0}
    # A per-component table wins over the flat one for its component.
    model = build_model(ModelConfig(**TINY, activation="sine_gate", block_options={"gain": 2.0},
                                    options={"sine_gate": {"gain": 4.0}}))
    assert {m.gain for m in built(model, "sine_gate")} == {4.0}


def test_options_are_read_from_toml_as_tables_per_component(gates, tmp_path, capsys):
    path = tmp_path / "cfg.toml"
    path.write_text(f'[model]\n{TINY_TOML}activation = "sine_gate"\n\n[model.options.sine_gate]\ngain = 2.0\n')
    assert ModelConfig.from_toml(path).options == {"sine_gate": {"gain": 2.0}}
    assert main(["config", "show", str(path)]) == 0
    assert "\noptions = { sine_gate = { gain = 2.0 } }\n" in capsys.readouterr().out
    path.write_text(f"[model]\n{TINY_TOML}options = {{ sine_gate = 2.0 }}\n")
    with pytest.raises(LyraError, match=rf"^{re.escape(str(path))}:model\.options\.sine_gate: expected a table, "
                                        r"got a number"):
        ModelConfig.from_toml(path)


# -- what a build checks -----------------------------------------------------------------
def test_a_factory_returning_no_module_is_reported_under_the_key_naming_it(gates):
    # Built inside the encoder's blocks, but the config key to change is model.activation.
    with pytest.raises(LyraError, match=rf"^model\.activation: activation 'tensor_act' from {ORIGIN_RE} "
                                        r"built a Tensor, not an nn\.Module"):
        build_model(ModelConfig(**TINY, activation="tensor_act"))


def test_a_block_missing_an_argument_of_its_kind_is_one_line(gates):
    with pytest.raises(LyraError) as info:
        build_model(ModelConfig(**TINY, encoder_block="no_residual_unit"))
    assert str(info.value) == (f"model.encoder_block: encoder_block 'no_residual_unit' ({ORIGIN}) does not take "
                               "'residual_unit', which Lyra passes to every encoder_block (in_channels, out_channels, "
                               "stride, dilations, kernel_size, activation, residual_unit, then its options)")


@pytest.mark.parametrize("cfg, message", [
    (dict(residual_unit="shrinking"),
     rf"model\.residual_unit: residual_unit 'shrinking' \({ORIGIN_RE}\) must keep its input's shape \[B, C, T\]: "
     r"\[1, 4, 16\] in, \[1, 4, 15\] out \(at encoder\.blocks\.0\.res\.0\)"),
    (dict(encoder_block="widening"),
     rf"model\.encoder_block: encoder_block 'widening' \({ORIGIN_RE}\) must map \[B, 4, T\] -> \[B, 4, T/4\]: "
     r"\[1, 4, 16\] in, \[1, 5, 4\] out \(at encoder\.blocks\.0\)"),
    (dict(residual_unit="crashing"),
     rf"model\.residual_unit: residual_unit 'crashing' \({ORIGIN_RE}\) fails on a \[1, 4, 16\] input: RuntimeError: "
     r"The size of tensor a \(16\) must match the size of tensor b \(3\) at non-singleton dimension 2 "
     r"\(at encoder\.blocks\.0\.res\.0\)"),
], ids=["length", "channels", "crash"])
def test_a_component_breaking_its_shape_contract_fails_the_build_naming_it(gates, cfg, message):
    with pytest.raises(LyraError) as info:
        build_model(ModelConfig(**TINY, **cfg))
    assert re.fullmatch(message, str(info.value)), str(info.value)


def test_the_shape_check_runs_only_for_stages_holding_plugin_components(gates, monkeypatch):
    """The default model is all built-ins: no check, no cost. The check leaves the random
    state and the modules' training flags as they were."""
    stages = []
    real = lyra.model.build_checks._check_stage

    def counting(cfg, where, *rest):
        stages.append(where)
        real(cfg, where, *rest)

    monkeypatch.setattr(lyra.model.build_checks, "_check_stage", counting)
    build_model(ModelConfig(**TINY))
    assert stages == []
    build_model(ModelConfig(**TINY, decoder_block="oobleck_decoder_block", residual_unit="quiet_unit"))
    assert stages == ["encoder.blocks.0", "encoder.blocks.1", "decoder.blocks.0", "decoder.blocks.1"]

    noisy = ModelConfig(**TINY, activation="noisy")     # its forward draws random numbers
    torch.manual_seed(0)
    model = build_model(noisy)
    checked = torch.rand(3)
    assert len(stages) == 4 + 6 and all(m.training for m in model.modules())
    monkeypatch.setattr(lyra.model.vae, "check_shapes", lambda model: None)   # the name VAE calls
    torch.manual_seed(0)
    build_model(noisy)
    assert torch.equal(torch.rand(3), checked)           # the same draws as a build without the check


def test_old_model_configs_load_and_keep_their_fingerprints():
    """A checkpoint written before `options` existed has no such key and `block_options = {}`:
    it reads, and its fingerprint (which .lyra files record) is unchanged."""
    assert "options" in LATER_OPTIONS
    old = {k: v for k, v in ModelConfig.small().to_dict().items() if k != "options"}
    config = from_dict(ModelConfig, old, "checkpoint:model")
    assert config == ModelConfig.small() and "options" not in fingerprint_config(config)
    model = build_model(config)
    with torch.no_grad():
        for p in model.state_dict().values():
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape))
    assert model_fingerprint(model) == "6fcc6ac6bbb1cc3e"   # as computed before `options` was added
    assert "options" in fingerprint_config(ModelConfig.small(options={"snake": {}}))


# -- loading a plugin checkpoint -----------------------------------------------------------
def test_a_plugin_checkpoint_with_autoloading_off_says_so(gates, tmp_path, monkeypatch):
    """Not "not installed": the package is installed, the switch keeps it from loading."""
    registry.REGISTRY.load_plugins()
    ckpt = tmp_path / "gates.pt"
    save_checkpoint(ckpt, build_model(ModelConfig(**TINY, activation="sine_gate")))
    builtins_only()                                      # a new process...
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")       # ...with autoloading off
    with pytest.raises(LyraError) as info:
        load_model(ckpt)
    assert str(info.value) == (f"{ckpt}: the model uses activation 'sine_gate' from package 'lyra-plugin-gates', "
                               f"which is not registered: plugin autoloading is off ({registry.AUTOLOAD_ENV}=1); "
                               "unset it to load installed plugins (and pip install lyra-plugin-gates if it is not "
                               "installed)")
    monkeypatch.delenv(registry.AUTOLOAD_ENV)
    assert type(load_model(ckpt).encoder.act_out).__name__ == "SineGate"


# -- through the CLI -----------------------------------------------------------------------
def test_config_show_validates_names_and_options_in_one_line(gates, tmp_path):
    """`lyra config show` promises the config "after validation": it exited 0 on an unknown
    component name. Now it checks names and options, as a build would."""
    (tmp_path / "unknown.toml").write_text('[model]\nactivation = "sine_gat"\n')
    (tmp_path / "option.toml").write_text('[model]\nactivation = "sine_gate"\n[model.options.sine_gate]\ngian = 2.0\n')
    unknown, option = lyra_many([["config", "show", tmp_path / "unknown.toml"],
                                 ["config", "show", tmp_path / "option.toml"]],
                                cwd=tmp_path, env=lyra_env(PYTHONPATH=str(gates)))
    assert (unknown.returncode, unknown.stdout) == (1, b"")
    assert re.fullmatch(rf"lyra: error: {re.escape(str(tmp_path))}/unknown\.toml: model\.activation: unknown "
                        r"activation 'sine_gat' \(did you mean 'sine_gate'\?\); registered: .*; plugins loaded: "
                        r"gates\n", unknown.stderr), unknown.stderr
    assert (option.returncode, option.stdout) == (1, b"")
    assert option.stderr == (f"lyra: error: {tmp_path}/option.toml: model.options.sine_gate: activation 'sine_gate' "
                             f"({ORIGIN}) does not accept option 'gian' (its options: gain)\n")
