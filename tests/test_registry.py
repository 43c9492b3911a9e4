"""The component registry: registration, taken names, unknown names, lazy plugin discovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from lyra import registry
from lyra.core.errors import LyraError
from lyra.registry import Registry
from plugin_helpers import clean_registry, write_distribution  # noqa: F401  (autouse fixture)


class Square(nn.Module):
    def __init__(self, channels: int, **_):
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x * x


def fresh() -> Registry:
    """A registry of its own (no built-ins, no plugin discovery)."""
    return Registry(builtins_loaded=True, plugins_loaded=True)


def test_decorator_registers_a_class_and_create_builds_it():
    r = fresh()

    @r.register("activation", "square", provider="my-package")
    class Local(Square):
        pass

    assert r.get("activation", "square") is Local
    found = r.component("activation", "square")
    assert (found.kind, found.name, found.provider, found.plugin, found.compile_safe) == (
        "activation", "square", "my-package", None, True)
    module = r.create("activation", "square", channels=5)
    assert isinstance(module, Local) and module.channels == 5
    assert r.names("activation") == ["square"]
    x = torch.randn(3, 5, 7)
    torch.testing.assert_close(module(x), x * x)


def test_function_factories_register_and_must_build_a_module():
    r = fresh()
    r.register("activation", "square", lambda channels, **_: Square(channels))
    assert isinstance(r.create("activation", "square", channels=2), Square)

    r.register("activation", "number", lambda channels, **_: 3)
    with pytest.raises(LyraError, match=r"^activation 'number' from .* built a int, not an nn.Module"):
        r.create("activation", "number", channels=2)


@pytest.mark.parametrize("obj, why", [
    (Square(3), r"got an nn.Module instance \(Square\); register its class"),
    (type("NotAModule", (), {}), r"class NotAModule is not an nn.Module subclass"),
    (42, r"42 is not callable"),
])
def test_registering_something_that_is_not_a_module_factory_fails_at_once(obj, why):
    r = fresh()
    with pytest.raises(LyraError, match=rf"^cannot register activation 'bad': {why}"):
        r.register("activation", "bad", obj)
    assert r.names("activation") == []


def test_a_taken_name_raises_unless_overridden():
    r = fresh()
    r.register("activation", "square", Square, provider="first-package")

    class Other(Square):
        pass

    with pytest.raises(LyraError, match=r"^activation 'square' is already registered by package "
                                        r"'first-package'; pass override=True to replace it$"):
        r.register("activation", "square", Other)
    assert r.get("activation", "square") is Square
    r.register("activation", "square", Square)  # the same factory again: a no-op
    r.register("activation", "square", Other, override=True, compile_safe=False)
    assert r.get("activation", "square") is Other
    assert r.component("activation", "square").compile_safe is False


def test_unknown_name_lists_the_registered_names_and_the_closest():
    r = fresh()
    for name in ("snake", "square"):
        r.register("activation", name, Square)
    with pytest.raises(LyraError) as info:
        r.component("activation", "snek")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown activation 'snek' (did you mean 'snake'?); registered: snake, square")
    with pytest.raises(LyraError, match=r"^unknown component kind 'activatoin' \(kinds: activation, "):
        r.component("activatoin", "snake")


def test_builtins_are_registered_on_first_lookup():
    from lyra.model import blocks

    assert registry.get("activation", "snake") is blocks.Snake
    assert registry.component("encoder_block", "encoder_block").provider == "lyra"
    assert {c.key for c in registry.list_components(load_plugins=False)} >= {
        "activation/snake", "residual_unit/residual_unit", "encoder_block/encoder_block",
        "decoder_block/decoder_block"}


def test_create_records_which_components_are_not_compile_safe():
    r = fresh()
    r.register("activation", "square", Square)
    r.register("activation", "eager_only", Square, compile_safe=False)

    def pair(channels, **_):
        return nn.Sequential(r.create("activation", "square", channels=channels),
                             r.create("activation", "eager_only", channels=channels))

    r.register("residual_unit", "pair", pair)
    assert registry.compile_unsafe(r.create("activation", "square", channels=1)) == []
    unsafe = registry.compile_unsafe(r.create("residual_unit", "pair", channels=1))
    assert [c.key for c in unsafe] == ["activation/eager_only"]


def test_snapshot_and_restore_undo_registrations():
    saved = registry.REGISTRY.snapshot()
    registry.register("activation", "temporary", Square)
    assert "temporary" in registry.names("activation")
    registry.REGISTRY.restore(saved)
    assert "temporary" not in registry.names("activation")
    assert "snake" in registry.names("activation")


PROBE = """
    def register(registry):
        from torch import nn
        class Probe(nn.Identity):
            def __init__(self, channels, **_):
                super().__init__()
        registry.register("activation", "probe", Probe)
"""


def test_import_lyra_and_building_builtins_load_no_plugin(tmp_path):
    """In a fresh interpreter: `import lyra` and a built-in model read no entry points and
    import no plugin; the first unknown name does both (the positive control)."""
    site = write_distribution(tmp_path, "lyra-probe", "1.0", {"probe": "lyra_probe_plugin:register"},
                              {"lyra_probe_plugin.py": PROBE})
    script = textwrap.dedent("""
        import json, sys
        import torch  # torch's own import-time scans are not Lyra's
        import importlib.metadata as md
        calls = []
        for fn in ("entry_points", "distributions", "packages_distributions"):
            def spy(*args, _fn=fn, _orig=getattr(md, fn), **kwargs):
                calls.append(_fn)
                return _orig(*args, **kwargs)
            setattr(md, fn, spy)
        state = lambda: {"calls": sorted(set(calls)), "plugin": "lyra_probe_plugin" in sys.modules}
        import lyra
        out = {"import": state()}
        lyra.build_model(lyra.ModelConfig.small())
        out["build"] = state()
        lyra.registry.get("activation", "probe")
        out["miss"] = state()
        print(json.dumps(out))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    env.pop(registry.AUTOLOAD_ENV, None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["import"] == {"calls": [], "plugin": False}
    assert out["build"] == {"calls": [], "plugin": False}
    assert "entry_points" in out["miss"]["calls"] and out["miss"]["plugin"] is True


def test_autoload_off_switch(tmp_path, monkeypatch):
    site = write_distribution(tmp_path, "lyra-probe", "1.0", {"probe": "lyra_probe_switch:register"},
                              {"lyra_probe_switch.py": PROBE})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")
    with pytest.raises(LyraError, match=r"unknown activation 'probe'.*plugin autoloading is off "
                                        r"\(LYRA_DISABLE_PLUGIN_AUTOLOAD=1\)"):
        registry.component("activation", "probe")
    assert "lyra_probe_switch" not in sys.modules
    assert registry.REGISTRY.plugins_loaded is False

    monkeypatch.setenv(registry.AUTOLOAD_ENV, "0")  # "0" means on
    found = registry.component("activation", "probe")
    assert (found.provider, found.plugin) == ("lyra-probe", "probe")
    assert "probe" in registry.REGISTRY.loaded_plugins


def test_create_checks_the_call_and_gives_configured_options_to_their_component_only():
    r = fresh()

    class Gain(Square):
        def __init__(self, channels: int, *, gain: float = 1.0):
            super().__init__(channels)
            if gain <= 0:
                raise registry.OptionError("gain", f"must be positive, got {gain}")
            self.gain = gain

    r.register("activation", "gain", Gain, provider="gains")
    r.register("activation", "square", Square, provider="squares")
    assert r.component("activation", "gain").options() == ("gain",)
    assert r.component("activation", "square").options() == ()      # **_ takes no options
    with pytest.raises(registry.ComponentError) as info:              # not a bare TypeError
        r.create("activation", "gain", channels=2, gian=3.0)
    assert (str(info.value), info.value.key) == (
        "activation 'gain' (package 'gains') does not accept option 'gian' (its options: gain)", "gian")
    with pytest.raises(registry.ComponentError) as info:
        r.create("activation", "gain", channels=2, gain=-1.0)
    assert (str(info.value), info.value.key) == ("activation 'gain' (package 'gains'): gain: must be positive, got -1.0",
                                                 "gain")
    with registry.component_options({"gain": {"gain": 3.0}}) as built:
        assert r.create("activation", "gain", channels=2).gain == 3.0
        assert r.create("activation", "square", channels=2).channels == 2   # another name gets nothing
    assert built == {"gain", "square"}
    assert r.create("activation", "gain", channels=2).gain == 1.0           # outside the scope: defaults
