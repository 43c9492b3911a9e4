"""Typed TOML configs: every bad key, type or value is a one-line error naming it."""

from dataclasses import dataclass, field

import pytest

from lyra.core.toml import from_dict, read_toml, to_dict
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError


def write(tmp_path, text: str):
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def test_default_config_is_the_design_documents_model():
    cfg = ModelConfig()
    assert (cfg.sample_rate, cfg.channels, cfg.base_channels, cfg.latent_dim) == (44100, 2, 128, 64)
    assert cfg.c_mults == (1, 2, 4, 8, 16) and cfg.strides == (2, 4, 4, 8, 8)
    assert cfg.hop_length == 2048


def test_model_table_is_read_from_toml(tmp_path):
    path = write(tmp_path, "[model]\nbase_channels = 32\nstrides = [4, 4, 4]\nc_mults = [1, 2, 4]\n")
    cfg = ModelConfig.from_toml(path)
    assert cfg.base_channels == 32 and cfg.strides == (4, 4, 4) and cfg.hop_length == 64
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg  # round trip through plain data


def test_unknown_key_suggests_the_closest(tmp_path):
    path = write(tmp_path, "[model]\nbase_chanels = 32\n")
    with pytest.raises(LyraError, match=r"unknown key '.*model\.base_chanels' \(did you mean 'base_channels'\?\)"):
        ModelConfig.from_toml(path)


@pytest.mark.parametrize(
    "body, message",
    [
        ("latent_dim = 'big'", r"model\.latent_dim: expected an integer, got a string 'big'"),
        ("latent_dim = 1.5", r"model\.latent_dim: expected an integer"),
        ("strides = 8", r"model\.strides: expected a list"),
        ("strides = [2, 'x']", r"model\.strides\[1\]: expected an integer"),
        ("latent_dim = 0", r"model\.latent_dim: must be positive, got 0"),
        ("base_channels = -4", r"model\.base_channels: must be positive"),
        ("strides = [2, 4]", r"model\.c_mults/strides: lengths differ \(5 multipliers, 2 strides\)"),
        ("strides = [2, 4, 4, 8, 1]", r"model\.strides: every stride must be at least 2"),
        ("dilations = []", r"model\.dilations: must not be empty"),
        ("residual_kernel_size = 4", r"model\.residual_kernel_size: must be odd"),
        ("activation = ''", r"model\.activation: must be a component name"),
    ],
)
def test_bad_values_name_the_key(tmp_path, body, message):
    with pytest.raises(LyraError, match=message) as info:
        ModelConfig.from_toml(write(tmp_path, f"[model]\n{body}\n"))
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files_are_one_line_errors(tmp_path):
    with pytest.raises(LyraError, match="no such config file"):
        read_toml(tmp_path / "nope.toml")
    with pytest.raises(LyraError, match="invalid TOML"):
        read_toml(write(tmp_path, "[model\n"))
    with pytest.raises(LyraError, match="is a directory"):
        read_toml(tmp_path)


def test_python_callers_get_the_same_validation():
    with pytest.raises(LyraError, match=r"^c_mults/strides: lengths differ"):
        ModelConfig(strides=(2, 2))
    assert ModelConfig(strides=[2, 4, 4, 8, 8]).strides == (2, 4, 4, 8, 8)  # lists become tuples


@dataclass
class Inner:
    rate: float = 1.0
    mode: str = "a"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    flag: bool = False
    maybe: int | None = None


def test_nested_tables_unions_and_coercions():
    out = from_dict(Outer, {"inner": {"rate": 3}, "flag": True, "maybe": 4}, "cfg")
    assert out == Outer(Inner(3.0, "a"), True, 4) and isinstance(out.inner.rate, float)
    with pytest.raises(LyraError, match=r"cfg\.inner\.rate: expected a number"):
        from_dict(Outer, {"inner": {"rate": "fast"}}, "cfg")
    with pytest.raises(LyraError, match=r"cfg\.flag: expected true or false"):
        from_dict(Outer, {"flag": 1}, "cfg")
    with pytest.raises(LyraError, match=r"cfg\.inner: expected a table"):
        from_dict(Outer, {"inner": 3}, "cfg")
