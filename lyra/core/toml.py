"""Typed TOML: reading TOML into typed dataclasses, and writing them back (with comments).

Reading: `read_toml(path)` parses a file (UTF-8 text; a checkpoint or other binary file is
named as such); `from_dict(cls, data, where)` turns a parsed table into the dataclass `cls`,
checking every key: an unknown key gets a "did you mean" suggestion, a wrong type names the
key and the type expected, nested dataclasses are read recursively. No value read is a NaN or
an infinity, nor an integer outside TOML's 64 bits. `where` is the dotted path used in
messages (``model.strides``) and may start with the file name. Every problem is a one-line
`LyraError`.

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

from lyra.core.errors import LyraError, first_line, kind_of

T = TypeVar("T")


# ---------------------------------------------------------------------------------------
# Reading: TOML -> dataclasses
# ---------------------------------------------------------------------------------------
# A config is a few kilobytes, its tables nest 4 deep; past these it is not one.
MAX_CONFIG_BYTES = 16 << 20
MAX_DEPTH = 32


def read_config_bytes(path: Path, what: str) -> bytes:
    """The bytes of config file `path` (`what` names its kind in the too-large message: "a TOML
    config"); missing, a directory, unreadable or too large is a one-line `LyraError`."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise LyraError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise LyraError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise LyraError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise LyraError(f"{path}: more than {MAX_CONFIG_BYTES >> 20} MiB, too large for {what}")
    return raw


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable, binary, non-UTF-8 or malformed file is a
    one-line `LyraError` naming it."""
    path = Path(path)
    raw = read_config_bytes(path, "a TOML config")
    binary = _binary_kind(raw)
    if binary:
        raise LyraError(f"{path}: is {binary}, not a TOML config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise LyraError(f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; "
                        f"a TOML config is UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LyraError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise LyraError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:   # an integer of more digits than Python converts (its hint is Python's)
        raise LyraError(f"{path}: invalid TOML: {first_line(exc).split(';')[0]}") from None
    if _depth(data) > MAX_DEPTH:
        raise LyraError(f"{path}: arrays or tables nested more than {MAX_DEPTH} deep; no config key takes that")
    return data


def _depth(value: Any) -> int:
    """How deeply lists and tables nest in `value` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, (list, tuple)):
            stack += [(v, depth + 1) for v in item]
    return deepest


def _binary_kind(raw: bytes) -> str | None:
    """What a file that is no text is (its first bytes tell), or None for text."""
    if raw.startswith(b"PK\x03\x04"):   # torch.save's zip: its first entry is ARCHIVE/data.pkl
        return "a checkpoint (a binary file)" if b"data.pkl" in raw[:512] else "a zip archive (a binary file)"
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a checkpoint (a binary file)"   # a pickle (torch.save's legacy format)
    if raw.startswith(b"\x89LYRA"):
        return "a .lyra file (a binary file)"
    if len(raw) > 8 and raw[8:10] == b'{"' and int.from_bytes(raw[:8], "little") <= len(raw) - 8:
        return "a safetensors file (a binary file)"
    if b"\0" in raw[:8192]:
        return "a binary file"
    return None


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
    if tp is Any:   # passed on as it is (component options), but never a NaN or an infinity
        if _depth(value) > MAX_DEPTH:
            raise LyraError(f"{path}: lists or tables nested more than {MAX_DEPTH} deep")
        _check_finite(value, path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LyraError(f"{path}: expected a number, got {kind_of(value)} {_show(value)}")
        if isinstance(value, int) and not -2**63 <= value < 2**63:
            raise LyraError(f"{path}: {_show(value)} is too large a number")
        if not math.isfinite(value):
            raise LyraError(f"{path}: must be a finite number, got {_value(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LyraError(f"{path}: expected an integer, got {kind_of(value)} {_show(value)}")
        if not -2**63 <= value < 2**63:   # TOML's integers are 64-bit
            raise LyraError(f"{path}: {_show(value)} is outside TOML's 64-bit integer range")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise LyraError(f"{path}: expected true or false, got {kind_of(value)} {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise LyraError(f"{path}: expected a string, got {kind_of(value)} {_show(value)}")
        return value
    return value


def _check_finite(value: Any, path: str) -> None:
    """No NaN or infinity anywhere in `value` (lists and tables searched; TOML nests only so
    deep as its parser let through)."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise LyraError(f"{where}: must be a finite number, got {_value(item)}")
        if isinstance(item, int) and not isinstance(item, bool) and not -2**63 <= item < 2**63:
            raise LyraError(f"{where}: {_show(item)} is outside TOML's 64-bit integer range")
        if isinstance(item, dict):
            stack += [(v, f"{where}.{k}") for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            stack += [(v, f"{where}[{i}]") for i, v in enumerate(item)]


def _show(value: Any, limit: int = 60) -> str:
    """`repr(value)`, shortened past `limit` characters (a 5,000-digit number, a long string)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 192:
        return f"a number of about {round(value.bit_length() * math.log10(2))} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


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
