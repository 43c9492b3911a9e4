"""A folder-encoding job's manifest (``--manifest PATH``): JSON Lines, one record per complete
output (encoded now or skipped as complete), sorted by source, written atomically by rank 0
(the same bytes for 1 or N processes):

    source       the audio file, as DIR/relative-path (relative when DIR was given relative)
    duration_s   num_samples / sample_rate
    num_samples  length at the model's sample rate (decoding gives back exactly this many)
    sample_rate  the model's sample rate
    frames       latent frames in the file: ceil(num_samples / hop_length)
    output       the .lyra file, as OUT_DIR/relative-path

A manifest that exists is replaced, unless it is not one (its first line is not such a JSON
object): that is refused without --force. See docs/codec.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from lyra.core.atomic import atomic_write
from lyra.core.errors import LyraError

MANIFEST_FIELDS = ("source", "duration_s", "num_samples", "sample_rate", "frames", "output")


def record(source: Path, target: Path, num_samples: int, sample_rate: int, frames: int) -> dict:
    """One manifest line (see the module doc)."""
    return {"source": str(source), "duration_s": num_samples / sample_rate, "num_samples": num_samples,
            "sample_rate": sample_rate, "frames": frames, "output": str(target)}


def check_manifest(path: str, force: bool) -> None:
    """Refuse, before any work, a --manifest that cannot be written or would replace a file
    that is not a manifest (unless `force`)."""
    if path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise LyraError(f"{p}: --manifest is a folder; give a file name")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise LyraError(f"{p}: --manifest's folder {folder} does not exist")
    if force or not (p.exists() or p.is_symlink()):
        return
    try:
        with p.open("rb") as f:
            first = f.readline(1 << 20)
        ok = not first.strip() or set(MANIFEST_FIELDS) <= set(json.loads(first))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        ok = False
    if not ok:
        raise LyraError(f"{p}: already exists and is not a manifest (pass --force to overwrite)")


def write_manifest(path: str, records: Sequence[dict]) -> None:
    """The manifest, sorted by source, written atomically (``-``: standard output)."""
    text = "".join(json.dumps({k: r[k] for k in MANIFEST_FIELDS}) + "\n"
                   for r in sorted(records, key=lambda r: r["source"]))
    with atomic_write(path) as f:
        f.write(text.encode())
