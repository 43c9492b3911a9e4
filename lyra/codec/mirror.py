"""A folder of inputs and the folder of outputs that mirrors it (`lyra encode/decode DIR
OUT_DIR`): ``DIR/a/b.wav`` -> ``OUT_DIR/a/b.lyra``, and the checks before anything is written."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Sequence

from lyra.audio.folders import audio_files
from lyra.core.errors import LyraError


def list_folder(inp: str, out: str, suffixes: tuple[str, ...], out_suffix: str) -> list[tuple[Path, Path]]:
    """(source, target) for every file under folder `inp` whose suffix is one of `suffixes`
    (sorted; none inside `out`), the target mirroring it under `out` with `out_suffix`."""
    if out == "-":
        raise LyraError(f"{inp}: is a folder; OUT must be a folder too, not '-'")
    src, dst = Path(inp), Path(out)
    if dst.exists() and not dst.is_dir():
        raise LyraError(f"{out}: IN is a folder, so OUT must be a folder, but it is a file")
    inside = dst.resolve()
    files = [p for p in audio_files(src, suffixes) if not p.resolve().is_relative_to(inside)]
    if not files:
        raise LyraError(f"{inp}: no {' / '.join(suffixes)} files in this folder")
    pairs: list[tuple[Path, Path]] = []
    seen: dict[Path, Path] = {}
    for path in files:
        target = dst / path.relative_to(src).with_suffix(out_suffix)
        if target in seen:
            raise LyraError(f"{seen[target]} and {path} would both be written to {target}; rename one")
        seen[target] = path
        pairs.append((path, target))
    return pairs


def refuse_existing(pairs: Sequence[tuple[Path, Path]], out: str) -> None:
    """Refuse (one line, before any work) targets that already exist (--force allows them)."""
    existing = [target for _, target in pairs if target.exists() or target.is_symlink()]
    if existing:
        more = f", as do {len(existing) - 1} more in {out}" if len(existing) > 1 else ""
        raise LyraError(f"{existing[0]}: already exists{more} (pass --force to overwrite)")


def refuse_special(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Refuse (one line, before any work, --force or not) a target that is a folder, a named
    pipe, a socket or a device, or a link to one: a folder job writes regular files only, and
    never replaces (or blocks on) anything else."""
    for _, target in pairs:
        kind = special_kind(target)
        if kind:
            raise LyraError(f"{target}: already exists as {kind}; a folder job never replaces one (remove it)")


def special_kind(path: Path) -> str | None:
    """What `path` is (links followed) when it exists and is not a regular file: "a folder",
    "a named pipe", "a socket", "a device"; None for a regular file or nothing (a dangling link)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):   # nothing, or a link going nowhere
            return None
        raise
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"


def same_file(a: str, b: str) -> bool:
    """Whether paths `a` and `b` name one file (never for "-", stdin/stdout)."""
    if "-" in (a, b):
        return False
    pa, pb = Path(a), Path(b)
    try:
        return pa.resolve() == pb.resolve() or (pb.exists() and pa.exists() and pa.samefile(pb))
    except OSError:
        return False
