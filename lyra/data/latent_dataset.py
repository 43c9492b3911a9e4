"""`LatentDataset`: a pre-encoded folder (`lyra encode DIR OUT --manifest M`) as a PyTorch
dataset of fixed-length latent crops, for training a generative model on the latents.

    data = LatentDataset("latents.jsonl", frames=256, normalize=True, seed=0)
    item = data[7]          # {"latents": [D, 256], "mask": [256] bool, "start_seconds": ..., ...}
    loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=2)

One item per manifest line. A file with at least `frames` frames gives a crop at a start
drawn from (seed, epoch, index) alone (`set_epoch` for a new draw each epoch), so every
DataLoader worker, DDP rank and resumed run sees the same crop for the same index; a
shorter file gives all its frames, zero-padded, with `mask` False on the padding. With
`normalize`, latents are (z - mean) / std per channel, with the statistics written beside the
manifest (`lyra.codec.statistics`) or given; the padding stays 0. Only the manifest is read
on construction (no `.lyra` file is opened: tens of thousands of files start in a fraction
of a second), and an item reads only the chunks holding its crop (`lyra.data.crops`). The
dataset holds plain lists, so it pickles cheaply to worker processes. See
docs/latent-datasets.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from lyra.codec.manifest_reader import read_manifest
from lyra.codec.statistics import LatentStats, stats_path
from lyra.core.errors import LyraError
from lyra.data.crops import read_frames

PathLike = Union[str, os.PathLike]


class LatentDataset(torch.utils.data.Dataset):
    """Fixed-length crops of a manifest's `.lyra` files (see the module doc).

    `frames`: crop length in latent frames. `random_crop` False: every crop starts at frame 0.
    `normalize`: scale with `stats` (a `LatentStats`, a stats file, or None: the one beside
    the manifest). `root`: the folder the manifest's relative outputs are relative to
    (`lyra.codec.manifest_reader`).

    An item is a dict: ``latents`` [D, frames] float32, ``mask`` [frames] bool (True on real
    frames), ``length`` (real frames), ``start`` (the crop's first frame) and
    ``start_seconds`` (its time in the source), ``source`` and ``output`` (paths, as in the
    manifest), ``index``, and ``metadata``: the manifest line as it is (with any fields added
    to it, such as captions or labels).
    """

    def __init__(self, manifest: PathLike, frames: int, *, seed: int = 0, random_crop: bool = True,
                 normalize: bool = False, stats: Union[LatentStats, PathLike, None] = None,
                 root: Optional[PathLike] = None) -> None:
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
            raise LyraError(f"LatentDataset frames: must be a positive integer, got {frames!r}")
        self.manifest = Path(manifest)
        self.records, outputs = read_manifest(self.manifest, root)
        self.paths = [str(p) for p in outputs]
        self.frames, self.seed, self.random_crop, self.epoch = frames, int(seed), random_crop, 0
        self.stats: Optional[LatentStats] = None
        if normalize:
            self.stats = stats if isinstance(stats, LatentStats) else LatentStats.read(
                stats if stats is not None else stats_path(self.manifest))

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Draw other crops: the start of item i depends on (seed, epoch, i) only."""
        self.epoch = int(epoch)

    def crop_start(self, index: int) -> int:
        """The first frame of item `index`'s crop (0 for a file no longer than the crop)."""
        spare = self.records[index]["frames"] - self.frames
        if spare <= 0 or not self.random_crop:
            return 0
        rng = np.random.default_rng([self.seed & (2**63 - 1), self.epoch & (2**63 - 1), index])
        return int(rng.integers(0, spare + 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"LatentDataset index {index} out of range for {len(self)} items")
        index %= len(self)
        record, path = self.records[index], self.paths[index]
        start = self.crop_start(index)
        want = min(self.frames, record["frames"] - start)
        header, latents = read_frames(path, start, want)                   # [D, want]
        if latents.shape[-1] != want:
            raise LyraError(f"{path}: holds {start + latents.shape[-1]} frames, but {self.manifest} says "
                            f"{record['frames']}; was it replaced after the manifest was written?")
        if self.stats is not None:
            if header.model_fingerprint != self.stats.model_fingerprint:
                raise LyraError(f"{path}: written by model {header.model_fingerprint}, but the statistics are of "
                                f"model {self.stats.model_fingerprint}'s latents")
            latents = self.stats.normalize(latents)
        out = torch.zeros(latents.shape[0], self.frames)
        out[:, :want] = latents                                              # [D, want] -> [D, frames]
        mask = torch.zeros(self.frames, dtype=torch.bool)
        mask[:want] = True
        return {"latents": out, "mask": mask, "length": want, "start": start,
                "start_seconds": start * header.hop_length / header.sample_rate,
                "source": record["source"], "output": record["output"], "index": index, "metadata": dict(record)}
