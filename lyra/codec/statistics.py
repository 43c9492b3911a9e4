"""Latent statistics: the per-channel mean and standard deviation of stored latents, for
scaling them to zero mean and unit variance before a diffusion or language model sees them.

    part = moments_of(latents)                 # [D, F] -> Moments (float64: count, mean, M2)
    total = merge_all(parts)                   # Chan et al.'s parallel formula, in the order given
    stats = LatentStats.from_moments(total, files=len(parts), model_fingerprint=..., dtype=...)
    stats.write("latents.stats.json")          # atomically
    z = stats.normalize(latents)               # (z - mean) / std, per channel: [D, F] or [B, D, F]

Each file's `Moments` are computed alone, in float64, from the latents as the file stores
them (after the --dtype rounding), and merged in a fixed order (sorted output path): so one
process, torchrun's ranks and a resumed run give the same bytes, and `lyra stats` recomputes
exactly what pre-encoding wrote. `std` is the population standard deviation (divided by the
frame count). A file of integer codes (a discrete bottleneck) has no such statistics: it is
refused (`refuse_codes`). The file format is `LatentStats.to_json`; see docs/latent-datasets.md.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from lyra.core.atomic import atomic_write
from lyra.core.errors import LyraError

FORMAT = "lyra-latent-stats"
VERSION = 1
MIN_STD = 1e-12          # a channel that never varies is divided by this, not by zero


@dataclass(frozen=True)
class Moments:
    """What statistics merge: `count` frames, their per-channel `mean` and `m2` (the sum of
    squared deviations from the mean), float64 arrays of shape [D]."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count if self.count else np.full_like(self.mean, math.nan)


def moments_of(latents: torch.Tensor) -> Moments:
    """[D, F] latents -> their `Moments`, in float64 (two passes: the mean, then the deviations)."""
    x = latents.detach().to("cpu", torch.float64)                          # [D, F]
    if x.dim() != 2:
        raise LyraError(f"latent statistics: expected latents of shape [channels, frames], got {list(x.shape)}")
    count = x.shape[-1]
    if count == 0:
        return Moments(0, np.zeros(x.shape[0]), np.zeros(x.shape[0]))
    mean = x.mean(dim=-1, keepdim=True)                                    # [D, 1]
    m2 = ((x - mean) ** 2).sum(dim=-1)                                     # [D]
    return Moments(count, mean[:, 0].numpy(), m2.numpy())


def merge(a: Moments, b: Moments) -> Moments:
    """The moments of a's frames and b's together (Chan, Golub and LeVeque's pairwise update)."""
    if a.mean.shape != b.mean.shape:
        raise LyraError(f"latent statistics: cannot merge {a.mean.shape[0]} channels with {b.mean.shape[0]}")
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / n)
    return Moments(n, mean, m2)


def merge_all(parts: Iterable[Moments]) -> Optional[Moments]:
    """`merge` folded over `parts` in the order given; None for none."""
    total: Optional[Moments] = None
    for part in parts:
        total = part if total is None else merge(total, part)
    return total


@dataclass(frozen=True)
class LatentStats:
    """Per-channel `mean` and `std` of `frames` latent frames from `files` files, written by
    the model `model_fingerprint` and stored as `dtype`; `posterior` says whether the files
    hold posterior means or samples (``--sample``). `global_mean`/`global_std`: over every
    channel at once (the one scale some recipes use)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    frames: int
    files: int
    model_fingerprint: str
    dtype: str
    global_mean: float
    global_std: float
    posterior: str = "mean"

    @property
    def latent_dim(self) -> int:
        return len(self.mean)

    @classmethod
    def from_moments(cls, total: Moments, *, files: int, model_fingerprint: str, dtype: str,
                     posterior: str = "mean") -> "LatentStats":
        if total.count < 1:
            raise LyraError("latent statistics: no latent frames to compute them from")
        d = total.mean.shape[0]
        # All channels as one: the channels' moments merged (each has `count` frames).
        gmean = float(total.mean.mean())
        gm2 = float(total.m2.sum() + total.count * ((total.mean - gmean) ** 2).sum())
        return cls(tuple(float(v) for v in total.mean), tuple(float(v) for v in np.sqrt(total.variance)),
                   total.count, files, model_fingerprint, dtype, gmean, math.sqrt(gm2 / (total.count * d)),
                   posterior)

    # -- using them --------------------------------------------------------------------
    def _tensors(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(z, torch.Tensor) or z.dim() not in (2, 3) or z.shape[-2] != self.latent_dim:
            shape = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise LyraError(f"latents: expected shape [{self.latent_dim}, frames] or [batch, {self.latent_dim}, "
                            f"frames] for these statistics, got {shape}")
        mean = torch.tensor(self.mean, dtype=torch.float64)[:, None]               # [D, 1]
        std = torch.tensor(self.std, dtype=torch.float64).clamp_min(MIN_STD)[:, None]
        dtype = z.dtype if z.is_floating_point() else torch.float32
        return mean.to(z.device, dtype), std.to(z.device, dtype)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(z - mean) / std per channel: [D, F] or [B, D, F], same shape."""
        mean, std = self._tensors(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """z * std + mean per channel: the inverse of `normalize` (within float rounding)."""
        mean, std = self._tensors(z)
        return z * std + mean

    # -- files -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "model_fingerprint": self.model_fingerprint,
                "dtype": self.dtype, "posterior": self.posterior, "latent_dim": self.latent_dim,
                "files": self.files, "frames": self.frames, "mean": list(self.mean), "std": list(self.std),
                "global_mean": self.global_mean, "global_std": self.global_std}

    def to_json(self) -> str:
        """The stats file: one JSON object, sorted keys (the same statistics, the same bytes)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=1) + "\n"

    def write(self, path: Union[str, os.PathLike]) -> None:
        """Write `to_json` atomically to `path` ("-": standard output)."""
        with atomic_write(path) as f:
            f.write(self.to_json().encode())

    @classmethod
    def from_dict(cls, data: Any, name: str) -> "LatentStats":
        """Checked: every error is one line naming `name` and the key at fault."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LyraError(f"{name}: not a Lyra latent statistics file (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise LyraError(f"{name}: latent statistics version {data.get('version')!r} is not supported "
                            f"(expected {VERSION})")
        d = data.get("latent_dim")
        for key in ("mean", "std"):
            values = data.get(key)
            if not (isinstance(values, list) and isinstance(d, int) and len(values) == d > 0 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
                raise LyraError(f"{name}: '{key}' must be a list of latent_dim finite numbers")
        if any(v < 0 for v in data["std"]):
            raise LyraError(f"{name}: 'std' holds a negative value")
        for key in ("frames", "files"):
            if not isinstance(data.get(key), int) or isinstance(data.get(key), bool) or data[key] < 1:
                raise LyraError(f"{name}: '{key}' must be a positive integer")
        for key in ("model_fingerprint", "dtype", "posterior"):
            if not isinstance(data.get(key), str):
                raise LyraError(f"{name}: '{key}' must be a string")
        for key in ("global_mean", "global_std"):
            if not isinstance(data.get(key), (int, float)) or not math.isfinite(data[key]):
                raise LyraError(f"{name}: '{key}' must be a finite number")
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]), data["frames"],
                   data["files"], data["model_fingerprint"], data["dtype"], float(data["global_mean"]),
                   float(data["global_std"]), data["posterior"])

    @classmethod
    def read(cls, path: Union[str, os.PathLike]) -> "LatentStats":
        """A stats file written by `write` (pre-encoding, `lyra stats`)."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise LyraError(f"{path}: no such latent statistics file (write one with `lyra stats`)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise LyraError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise LyraError(f"{path}: not a Lyra latent statistics file (not JSON)") from None
        return cls.from_dict(data, str(path))


def stats_path(manifest: Union[str, os.PathLike]) -> Path:
    """Where the statistics of a manifest's files go: beside it, ``latents.jsonl`` ->
    ``latents.stats.json``."""
    p = Path(manifest)
    return p.with_name(p.stem + ".stats.json" if p.suffix else p.name + ".stats.json")


def refuse_codes(dtype: str, name: str, what: str = "latent statistics") -> None:
    """Refuse (one line) a `.lyra` file of integer codes where float latents are needed."""
    if dtype == "codes":
        raise LyraError(f"{name}: holds integer codes (a discrete bottleneck); {what} need float latents")


def file_moments(path: Union[str, os.PathLike]) -> tuple[Moments, Any]:
    """(moments of every frame, header) of the `.lyra` file `path`, read in full (every CRC)."""
    from lyra.audio.container import open_lyra

    with open_lyra(path) as reader:
        refuse_codes(reader.header.dtype, str(path))
        return moments_of(reader.read_all()), reader.header


def stats_of_files(paths: Sequence[Union[str, os.PathLike]], posterior: str = "mean") -> LatentStats:
    """`LatentStats` of `paths` (`.lyra` files of one model and dtype), merged in the order
    given; files of another model, dtype or latent size than the first are refused."""
    parts, first = [], None
    for path in paths:
        part, header = file_moments(path)
        if first is None:
            first = header
        else:
            for key in ("model_fingerprint", "dtype", "latent_dim"):
                if getattr(header, key) != getattr(first, key):
                    raise LyraError(f"{path}: {key} {getattr(header, key)} differs from {getattr(first, key)} "
                                    f"of {paths[0]}; statistics mix one model's files only")
        parts.append(part)
    if first is None:
        raise LyraError("latent statistics: no .lyra files to compute them from")
    return LatentStats.from_moments(merge_all(parts), files=len(parts), model_fingerprint=first.model_fingerprint,
                                    dtype=first.dtype, posterior=posterior)


def lyra_files(inp: Union[str, os.PathLike]) -> tuple[list[Path], Optional[Path]]:
    """The `.lyra` files `lyra stats IN` reads, in the order pre-encoding merges them (their
    paths sorted), and where their statistics go by default: every `.lyra` file under a
    folder (None: standard output), or a manifest's outputs (beside the manifest)."""
    from lyra.codec.manifest_reader import read_manifest

    p = Path(inp)
    if p.is_dir():
        found = [f for f in p.rglob("*.lyra") if f.is_file() and not f.name.startswith(".")]
        return sorted(found, key=lambda f: f.relative_to(p).as_posix()), None
    if not p.exists():
        raise LyraError(f"{p}: no such folder or manifest")
    records, outputs = read_manifest(p)
    order = sorted(range(len(records)), key=lambda i: records[i]["output"])
    return [outputs[i] for i in order], stats_path(p)
