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
object): that is refused without --force. One of the job's own files (an output, a source,
the checkpoint) is refused even with it. A named pipe or a device is written in place, never
read. See docs/codec.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Sequence, Union

from lyra.core.atomic import atomic_write
from lyra.core.errors import LyraError
from lyra.core.paths import file_kind

MANIFEST_FIELDS = ("source", "duration_s", "num_samples", "sample_rate", "frames", "output")


def record(source: Path, target: Path, num_samples: int, sample_rate: int, frames: int) -> dict:
    """One manifest line (see the module doc)."""
    return {"source": str(source), "duration_s": num_samples / sample_rate, "num_samples": num_samples,
            "sample_rate": sample_rate, "frames": frames, "output": str(target)}


def check_manifest(path: str, force: bool, pairs: Sequence[tuple[Path, Path]], inp: str, out: str,
                   checkpoint: Union[str, os.PathLike]) -> None:
    """Refuse, before any work, a --manifest that cannot be written, that is one of the job's
    files (a source or a target of `pairs`, under folders `inp` and `out`, or the
    `checkpoint`), or that would replace a file that is not a manifest (unless `force`). Its
    folder may be one the job creates (`out` or a folder inside it)."""
    if path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise LyraError(f"{p}: --manifest is a folder; give a file name")
    outputs = {target.relative_to(out) for _, target in pairs}        # paths only: no file looked at
    if _under(p, out) & outputs:
        raise LyraError(f"{p}: --manifest is one of the job's outputs; give another name")
    if _under(p, inp) & {source.relative_to(inp) for source, _ in pairs}:
        raise LyraError(f"{p}: --manifest is one of the job's inputs; give another name")
    if _resolved(p) == _resolved(Path(checkpoint)):
        raise LyraError(f"{p}: --manifest is the checkpoint; give another name")
    kind = file_kind(p)
    if kind == "stream":
        return                  # a named pipe, a device: written in place at the end, never read
    folder = p.parent if str(p.parent) else Path(".")
    made = {Path("."), *(rel.parent for rel in outputs)}               # under `out`, the job makes these
    if not folder.is_dir() and not _under(folder, out) & made:
        raise LyraError(f"{p}: --manifest's folder {folder} does not exist")
    _check_writable(p, folder)
    if force or not (kind == "file" or p.is_symlink()):
        return
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)        # never waits, whatever is there now
        with os.fdopen(fd, "rb") as f:
            first = f.readline(1 << 20)
        fields = json.loads(first) if first.strip() else None
        ok = fields is None or (isinstance(fields, dict) and set(MANIFEST_FIELDS) <= set(fields))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise LyraError(f"{p}: already exists and is not a manifest (pass --force to overwrite)")


def _under(path: Path, folder: str) -> set[Path]:
    """`path` relative to `folder`, as written and with links resolved (empty: not inside it)."""
    found = set()
    written = (Path(os.path.abspath(path)), Path(os.path.abspath(folder)))
    for a, b in (written, (_resolved(path), _resolved(Path(folder)))):
        if a.is_relative_to(b):
            found.add(a.relative_to(b))
    return found


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):   # a link loop: compared as written
        return path.absolute()


def _check_writable(p: Path, folder: Path) -> None:
    """Create and remove a file where the manifest will go (in the nearest folder that exists,
    for one the job creates), so that a folder it cannot write is found before any work."""
    here = folder
    while not here.is_dir() and here != here.parent:
        here = here.parent
    probe = here / f".{p.name}.{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise LyraError(f"{p}: --manifest cannot be written in {here} ({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):
        os.unlink(probe)


def write_manifest(path: str, records: Sequence[dict]) -> None:
    """The manifest, sorted by source, written atomically (``-``: standard output)."""
    text = "".join(json.dumps({k: r[k] for k in MANIFEST_FIELDS}) + "\n"
                   for r in sorted(records, key=lambda r: r["source"]))
    if path != "-" and file_kind(path) != "stream":
        Path(path).parent.mkdir(parents=True, exist_ok=True)   # a folder inside OUT, checked before
    with atomic_write(path) as f:
        f.write(text.encode())
