"""What a folder-encoding job finds at its outputs before any work (`check_output`):

    complete     reads in full (`lyra.audio.container.open_lyra`: every chunk's CRC32 and place,
                 the end marker) and names this model and the --dtype asked for: skipped
    incomplete   a .lyra file (or a prefix of the magic bytes: empty) truncated or corrupted:
                 encoded again
    foreign      another model's or another --dtype's .lyra file, or anything else (not a
                 .lyra file, a symbolic link, a folder, a named pipe, unreadable): the job is
                 refused without --force (a folder, pipe, socket or device even with it:
                 `lyra.codec.mirror.refuse_special`)

and the temporaries a killed run left beside them (`remove_leftovers`). See docs/codec.md.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from lyra.audio.container import MAGIC, check_model, open_lyra
from lyra.codec.mirror import special_kind
from lyra.codec.statistics import Moments, moments_of
from lyra.core.errors import LyraError

if TYPE_CHECKING:
    from lyra.model.config import ModelConfig

# `lyra.core.atomic.atomic_write`'s temporary for OUT/NAME: OUT/.NAME.<8 hex digits>.tmp
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")


@dataclass(frozen=True)
class Existing:
    """What is at an output's path before the job: `kind` is missing, complete, incomplete or
    foreign (see the module doc); `reason` says why for the last two; a complete one carries
    its lengths (num_samples, sample_rate, frames) and its latents' `Moments`."""

    kind: str
    reason: str = ""
    lengths: Optional[tuple[int, int, int]] = None
    moments: Optional[Moments] = None


def check_output(target: Path, fingerprint: str, config: ModelConfig, dtype: str, checkpoint: str,
                 rows: int | None = None) -> Existing:
    """What `target` holds for the model `fingerprint` (`config`, loaded from `checkpoint`)
    and latents stored as `dtype` ("codes" for a discrete model, with `rows` code rows per
    frame): see `Existing` and the module doc."""
    if target.is_symlink():
        return Existing("foreign", "already exists as a symbolic link")
    if not target.exists():
        return Existing("missing")
    try:
        kind = special_kind(target)
        if kind:                                 # never opened: a named pipe would block
            return Existing("foreign", f"already exists as {kind}")
        with os.fdopen(os.open(target, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            head = f.read(len(MAGIC))
        if not MAGIC.startswith(head):
            return Existing("foreign", "already exists and is not a .lyra file")
        with open_lyra(target) as reader:
            latents = reader.read_all()     # every chunk's CRC32 and place, the end marker
            header, trailer = reader.header, reader.trailer
    except LyraError as exc:
        return Existing("incomplete", str(exc))
    except OSError as exc:
        return Existing("foreign", f"already exists and cannot be read ({exc.strerror or exc})")
    if header.model_fingerprint != fingerprint:
        return Existing("foreign", f"already exists, encoded by model {header.model_fingerprint}; "
                                   f"{checkpoint} is model {fingerprint}")
    if header.dtype != dtype:
        wanted = "integer codes" if dtype == "codes" else f"--dtype {dtype}"
        return Existing("foreign", f"already exists, stored as {header.dtype}, not {wanted}")
    if rows is not None and header.num_quantizers != rows:
        return Existing("foreign", f"already exists with {header.num_quantizers} code rows per frame, not "
                                   f"--quantizers {rows}")
    try:
        check_model(header, config, str(target), checkpoint)   # a header altered, CRC redone
    except LyraError as exc:
        return Existing("incomplete", str(exc))
    moments = None if header.dtype == "codes" else moments_of(latents)     # the job's statistics
    return Existing("complete", lengths=(trailer.num_samples, header.sample_rate, trailer.num_frames), moments=moments)


def remove_leftovers(pairs: Sequence[tuple[Path, Path]]) -> int:
    """Delete the temporaries a killed run left beside this job's targets; how many."""
    names: dict[Path, set[str]] = {}
    for _, target in pairs:
        names.setdefault(target.parent, set()).add(target.name)
    removed = 0
    for folder, wanted in names.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            match = TEMPORARY.match(entry.name)
            if match and match["name"] in wanted and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
