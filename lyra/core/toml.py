"""Typed TOML: reading TOML into typed dataclasses, and writing them back (with comments).

Reading: `read_toml(path)` parses a file; `from_dict(cls, data, where)` turns a parsed table
into the dataclass `cls`, checking every key: an unknown key gets a "did you mean"
suggestion, a wrong type names the key and the type expected, nested dataclasses are read
recursively. `where` is the dotted path used in messages (``model.strides``) and may start
with the file name. Every problem is a one-line `LyraError`.

Help: a field made with `help_field(default, "what it is")` carries its help text, which
`help_text(cls, name)` returns and `lyra config init` writes above the key.

Writing (the standard library only reads TOML): `dumps(data, comment=None)` writes top-level
values first, then one ``[table]`` per nested mapping; mappings inside a table become inline
tables. ``comment(table, key)`` may return a help line written above the key as ``# ...``.
TOML has no null: a `None` value is left out, or, when it has a comment, written as a
commented-out ``# key = (unset)`` line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

from lyra.core.errors import LyraError, kind_of

T = TypeVar("T")


# ---------------------------------------------------------------------------------------
# Reading: TOML -> dataclasses
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
        raise LyraError(f"{where or cls.__name__}: expected a table, got {kind_of(data)}")
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
            raise LyraError(f"{path}: expected a list, got {kind_of(value)}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise LyraError(f"{path}: expected a table, got {kind_of(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: _coerce(item, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LyraError(f"{path}: expected a number, got {kind_of(value)} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LyraError(f"{path}: expected an integer, got {kind_of(value)} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise LyraError(f"{path}: expected true or false, got {kind_of(value)} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise LyraError(f"{path}: expected a string, got {kind_of(value)} {value!r}")
        return value
    return value


# ---------------------------------------------------------------------------------------
# Help texts on fields
# ---------------------------------------------------------------------------------------
def help_field(default: Any = dataclasses.MISSING, help: str = "", *,
               default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying its one-line help text (see `help_text`)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def help_text(cls: type, name: str) -> str:
    """The help text of field `name` of config dataclass `cls` ('' if none)."""
    return next((f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name), "")


# ---------------------------------------------------------------------------------------
# Writing: plain data -> TOML
# ---------------------------------------------------------------------------------------
def dumps(data: dict[str, Any], comment: Callable[[str, str], str] | None = None, header: str = "") -> str:
    """`data` as TOML text (see the module docstring), after `header`'s lines as comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] + [""] if header else []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines += _key_values("", scalars, comment)
    for name, table in tables.items():
        if lines:
            lines.append("")
        note = comment("", name) if comment else ""
        if note:
            lines.append(f"# {note}")
        lines.append(f"[{_key(name)}]")
        lines += _key_values(name, table, comment)
    return "\n".join(lines) + "\n"


def _key_values(table: str, items: dict[str, Any], comment: Callable[[str, str], str] | None) -> list[str]:
    out = []
    for key, value in items.items():
        note = comment(table, key) if comment else ""
        if value is None and not note:
            continue
        if note:
            out.append(f"# {note}")
        out.append(f"# {_key(key)} = (unset)" if value is None else f"{_key(key)} = {_value(value)}")
    return out


def _key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "-_" for c in key) and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
