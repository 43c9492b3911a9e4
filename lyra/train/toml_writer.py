"""Writing plain data as TOML (the standard library only reads it).

`dumps(data, comment=None)` writes top-level values first, then one ``[table]`` per nested
mapping; mappings inside a table become inline tables. ``comment(table, key)`` may return a
help line written above the key as ``# ...``. TOML has no null: a `None` value is left out, or,
when it has a comment, written as a commented-out ``# key = (unset)`` line.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable


def dumps(data: dict[str, Any], comment: Callable[[str, str], str] | None = None, header: str = "") -> str:
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
