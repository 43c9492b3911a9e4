"""Reading a folder job's manifest back (`lyra.codec.manifest` writes it): its records, checked
line by line, and where their `.lyra` outputs are.

    records, outputs = read_manifest("latents.jsonl")     # [dict], [Path] in the same order

The manifest names outputs as the job was given them (``latents/a.lyra`` for ``lyra encode
music latents``, run in some folder). A relative output is found relative to the current
folder when the first one is there, else relative to the manifest's own folder (a manifest
written beside OUT and read from elsewhere); `root` overrides both. No `.lyra` file is opened:
reading the manifest of tens of thousands of files takes a fraction of a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from lyra.codec.manifest import MANIFEST_FIELDS
from lyra.core.errors import LyraError


def read_manifest(path: Union[str, os.PathLike], root: Optional[Union[str, os.PathLike]] = None
                  ) -> tuple[list[dict], list[Path]]:
    """(records, their outputs' paths) of the manifest `path` (see the module doc); every
    error is one line naming the manifest and the line at fault."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        raise LyraError(f"{p}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LyraError(f"{p}: cannot be read as a manifest ({getattr(exc, 'strerror', None) or exc})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            raise LyraError(f"{p}: line {number} is not JSON; is this a manifest (`lyra encode --manifest`)?") from None
        if not isinstance(rec, dict) or not set(MANIFEST_FIELDS) <= set(rec):
            missing = sorted(set(MANIFEST_FIELDS) - set(rec)) if isinstance(rec, dict) else list(MANIFEST_FIELDS)
            raise LyraError(f"{p}: line {number} has no '{missing[0]}'; is this a manifest (`lyra encode --manifest`)?")
        for key in ("frames", "num_samples", "sample_rate"):
            if not isinstance(rec[key], int) or isinstance(rec[key], bool) or rec[key] < 1:
                raise LyraError(f"{p}: line {number}: '{key}' must be a positive integer, got {rec[key]!r}")
        if not isinstance(rec["output"], str) or not isinstance(rec["source"], str):
            raise LyraError(f"{p}: line {number}: 'source' and 'output' must be strings")
        records.append(rec)
    return records, resolve_outputs(p, [r["output"] for r in records], root)


def resolve_outputs(manifest: Path, outputs: list[str], root: Optional[Union[str, os.PathLike]] = None) -> list[Path]:
    """The paths of a manifest's `outputs` (see the module doc for relative ones)."""
    if root is not None:
        base = Path(root)
    elif not outputs or Path(outputs[0]).is_absolute() or Path(outputs[0]).exists():
        base = Path(".")
    else:
        base = manifest.parent
    return [Path(out) if Path(out).is_absolute() or base == Path(".") else base / out for out in outputs]
