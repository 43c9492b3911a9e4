"""Typed configs: dataclasses read from TOML once, at the edge, validated there.

`from_dict(cls, data, where)` turns a parsed TOML table into the dataclass `cls`, checking
every key: an unknown key gets a "did you mean" suggestion, a wrong type names the key and
the type expected, nested dataclasses are read recursively. `where` is the dotted path used
in messages (``model.strides``) and may start with the file name.

`ModelConfig` describes the VAE. Its defaults are the design document's model (255,858,050
parameters); `ModelConfig.small()` is the tiny model used by tests and the CPU demo.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lyra.errors import LyraError

T = TypeVar("T")


# ---------------------------------------------------------------------------------------
# Generic TOML -> dataclass reading
# ---------------------------------------------------------------------------------------
def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file is a one-line `LyraError`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise LyraError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise LyraError(f"{path}: is a directory, not a config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise LyraError(f"{path}: invalid TOML: {exc}") from None


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, validating keys and types (see module doc).

    Dataclasses check their own values in ``__post_init__`` and raise `LyraError` messages
    that start with the offending key; this prefixes them with `where`.
    """
    if not isinstance(data, dict):
        raise LyraError(f"{where or cls.__name__}: expected a table, got {_type_name(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise LyraError(f"unknown key '{path}'{hint}; allowed: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, path)
    try:
        return cls(**kwargs)  # dataclasses validate themselves in __post_init__
    except TypeError as exc:  # a required field missing
        raise LyraError(f"{where or cls.__name__}: {exc}") from None
    except LyraError as exc:  # prefix the key path the message starts with
        raise LyraError(f"{where}.{exc}" if where else str(exc)) from None


def to_dict(obj: Any) -> Any:
    """A dataclass as plain TOML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except LyraError as exc:
                errors.append(str(exc))
        raise LyraError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise LyraError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise LyraError(f"{path}: expected a list, got {_type_name(value)}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise LyraError(f"{path}: expected a table, got {_type_name(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: _coerce(item, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LyraError(f"{path}: expected a number, got {_type_name(value)} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LyraError(f"{path}: expected an integer, got {_type_name(value)} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise LyraError(f"{path}: expected true or false, got {_type_name(value)} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise LyraError(f"{path}: expected a string, got {_type_name(value)} {value!r}")
        return value
    return value


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """The VAE: widths, strides and the registry names of its parts.

    Encoder block i maps ``base_channels * ([1] + c_mults)[i]`` channels to
    ``base_channels * c_mults[i]`` and divides time by ``strides[i]``; the decoder mirrors it.
    The hop (samples per latent frame) is the product of the strides.
    """

    sample_rate: int = 44100
    channels: int = 2
    base_channels: int = 128
    latent_dim: int = 64
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    dilations: tuple[int, ...] = (1, 3, 9)
    residual_kernel_size: int = 7
    logvar_clamp: float = 10.0
    # How the encoder head's second half parameterises the posterior's spread:
    # "logvar" -- it is log(sigma^2), clamped to +-logvar_clamp (the design document's);
    # "softplus" -- sigma = softplus(it) + 1e-4 (stable-audio-tools' VAE bottleneck).
    posterior: typing.Literal["logvar", "softplus"] = "logvar"
    decoder_in_kernel: int = 3        # the decoder's input conv (latents -> widest); Oobleck: 7
    decoder_out_bias: bool = True     # the decoder's output conv has a bias; Oobleck: false
    final_tanh: bool = False          # squash the decoded audio with tanh
    activation: str = "snake"
    residual_unit: str = "residual_unit"
    encoder_block: str = "encoder_block"
    decoder_block: str = "decoder_block"
    # Options per component, keyed by component name: ``{"aa_snake": {"aa_taps": 25}}`` is
    # the TOML table ``[model.options.aa_snake]``. Each table goes to that component only,
    # wherever the model builds it, and is checked against its factory when the model is built.
    # (New: `lyra.checkpoint.LATER_OPTIONS` keeps it out of older models' fingerprints.)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Deprecated: one table of keyword arguments passed to every component (use `options`).
    block_options: dict[str, Any] = field(default_factory=dict)

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @classmethod
    def small(cls, **overrides: Any) -> "ModelConfig":
        """A tiny model (same hop of 2048) for tests and the CPU demo."""
        base = dict(base_channels=16, latent_dim=16, c_mults=(1, 2, 2, 4, 4))
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = "model") -> "ModelConfig":
        data = read_toml(path)
        if table is not None:
            data = data.get(table, {})
        return from_dict(cls, data, f"{path}:{table}" if table else str(path))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def __post_init__(self) -> None:
        for key in ("c_mults", "strides", "dilations"):  # lists from Python callers
            object.__setattr__(self, key, tuple(getattr(self, key)))
        self.validate()

    def validate(self) -> None:
        """Raise a `LyraError` whose message starts with the first bad key."""
        p = ""
        for key in ("sample_rate", "channels", "base_channels", "latent_dim", "residual_kernel_size",
                    "decoder_in_kernel"):
            if getattr(self, key) <= 0:
                raise LyraError(f"{p}{key}: must be positive, got {getattr(self, key)}")
        for key in ("c_mults", "strides", "dilations"):
            values = getattr(self, key)
            if len(values) == 0:
                raise LyraError(f"{p}{key}: must not be empty")
            bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v <= 0]
            if bad:
                raise LyraError(f"{p}{key}: every entry must be a positive integer, got {bad[0]!r}")
        if min(self.strides) < 2:
            raise LyraError(f"{p}strides: every stride must be at least 2, got {min(self.strides)}")
        if len(self.c_mults) != len(self.strides):
            raise LyraError(
                f"{p}c_mults/strides: lengths differ ({len(self.c_mults)} multipliers, "
                f"{len(self.strides)} strides); each encoder block needs one of each"
            )
        for key in ("residual_kernel_size", "decoder_in_kernel"):
            if getattr(self, key) % 2 == 0:
                raise LyraError(f"{p}{key}: must be odd, got {getattr(self, key)}")
        if self.posterior not in ("logvar", "softplus"):
            raise LyraError(f"{p}posterior: expected 'logvar' or 'softplus', got {self.posterior!r}")
        if self.logvar_clamp <= 0:
            raise LyraError(f"{p}logvar_clamp: must be positive, got {self.logvar_clamp}")
        for key in ("activation", "residual_unit", "encoder_block", "decoder_block"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise LyraError(f"{p}{key}: must be a component name")
        if not isinstance(self.options, dict):
            raise LyraError(f"{p}options: expected a table of tables (one per component name)")
        for name, table in self.options.items():
            if not isinstance(name, str) or not name:
                raise LyraError(f"{p}options: {name!r} is not a component name")
            if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
                raise LyraError(f"{p}options.{name}: expected a table of option names and values")
        if not isinstance(self.block_options, dict):
            raise LyraError(f"{p}block_options: expected a table")
