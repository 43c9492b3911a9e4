"""Audio folders: the one recursive walk that finds the audio files under a folder (training
data, `lyra encode`/`preencode`/`eval` on a folder)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")   # picked from folders


def audio_files(folder: str | Path, suffixes: Iterable[str]) -> list[Path]:
    """Files under `folder` (recursive, sorted) whose suffix is one of `suffixes` (with the
    dot: ".wav"), compared case-insensitively. Only files (`Path.is_file`, so a link to a file
    counts), never folders."""
    wanted = {s.lower() for s in suffixes}
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in wanted and p.is_file())
