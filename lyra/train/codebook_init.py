"""Data-driven codebook initialisation (an ``rvq`` with ``init = "kmeans"``) at a fresh run's start.

A bottleneck that wants it has an ``initialize(h)`` method and an ``initialized`` flag (stored in
its weights, so a resumed run, or one started from a checkpoint, does not redo it). It gets the
encoder-head features of the first training crops in dataset order (`CropDataset`'s items are
pure functions of the run's seed), computed on every process: each process then derives the
same codebooks with no communication, and a two-process run starts where one process does.
"""

from __future__ import annotations

import torch

from lyra.model.vae import VAE
from lyra.train.data import CropDataset

INIT_CROPS = 64   # at most this many crops feed the k-means (their frames are the samples)


def initialize_codebooks(model: VAE, dataset: CropDataset, device: torch.device, batch_size: int) -> bool:
    """Run the bottleneck's ``initialize`` once on the first `INIT_CROPS` crops (if it wants
    one and has not had it); whether it ran."""
    bottleneck = model.bottleneck
    if not hasattr(bottleneck, "initialize") or getattr(bottleneck, "initialized", True):
        return False
    count = min(INIT_CROPS, len(dataset))
    features = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            audio = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, count))])
            features.append(model.encode_features(audio.to(device)).float())   # [b, C, T] -> [b, H, F]
        bottleneck.initialize(torch.cat(features))                              # [N, H, F]
    return True
