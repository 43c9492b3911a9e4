"""Audio folders: the one recursive walk that finds the audio files under a folder (training
data, `lyra encode`/`decode`/`eval` on a folder). A folder it cannot list is an error naming
it, never skipped; links to folders are followed, each folder walked once. See docs/codec.md."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from lyra.core.errors import LyraError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")   # picked from folders
# What a link whose target is gone (or a link loop) gives: skipped, as nothing there.
_DANGLING = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def audio_files(folder: str | Path, suffixes: Iterable[str]) -> list[Path]:
    """Files under `folder` (recursive, sorted) whose suffix is one of `suffixes` (with the
    dot: ".wav"), compared case-insensitively. Only files (a link to a file counts), never
    folders, named pipes or devices.

    Links to folders are followed, and every folder is walked once (by device and inode): the
    real folders under `folder` first, then the linked ones not among them, so a link to a
    folder already walked (one inside `folder`, or a parent: a loop) adds nothing. A folder
    that cannot be listed, or an entry whose kind cannot be told, is a `LyraError` naming it.
    """
    wanted = {s.lower() for s in suffixes}
    root = Path(folder)
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    real: list[Path] = [root]             # folders to walk ...
    linked: list[Path] = []               # ... and links to folders, walked after every real one
    while real or linked:
        is_link = not real
        here = linked.pop(0) if is_link else real.pop()
        try:
            info = os.stat(here)
        except OSError as exc:
            if is_link and exc.errno in _DANGLING:
                continue                                   # the link's folder has just gone
            raise LyraError(f"{here}: cannot read this folder ({exc.strerror or exc})") from None
        if (info.st_dev, info.st_ino) in seen:
            continue                                       # walked already, or a loop
        seen.add((info.st_dev, info.st_ino))
        for entry in _listing(here):
            path = here / entry.name
            try:
                if entry.is_dir():                         # links followed
                    (linked if entry.is_symlink() else real).append(path)
                elif path.suffix.lower() in wanted and entry.is_file():
                    found.append(path)
            except OSError as exc:
                if exc.errno not in _DANGLING:             # a dangling link is nothing there
                    raise LyraError(f"{path}: cannot tell what it is ({exc.strerror or exc})") from None
    return sorted(found)


def _listing(folder: Path) -> list[os.DirEntry]:
    """`folder`'s entries by name (the walk's order decides where a linked folder is found),
    or a `LyraError` naming it."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise LyraError(f"{folder}: cannot read this folder ({exc.strerror or exc})") from None
