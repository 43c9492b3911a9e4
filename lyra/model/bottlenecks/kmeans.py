"""Seeded k-means for codebooks that look codes up by cosine (the ``rvq`` bottleneck's ``init = "kmeans"``).

The quantiser picks the code whose l2-normalised row is nearest the l2-normalised input, and
hands the decoder the code's row as it is (not normalised). So the k-means here assigns as the
quantiser does (by cosine) and moves each centre to the plain mean of the vectors assigned to
it: the row that makes the commitment error of its cluster smallest, and what an EMA codebook
(`lyra.model.bottlenecks.rvq`) converges to. An empty cluster keeps its centre (as encodec's
k-means does).

    samples [N, d] -> centres [K, d], counts [K]      (float32; pure function of samples and seed)

The starting centres are K samples drawn without replacement (with replacement when N < K) by
a CPU `torch.Generator` seeded with `seed`, so every process given the same samples gets the
same centres, whatever the device.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CHUNK = 8192   # rows assigned at once: bounds the [rows, K] similarity matrix


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The quantiser's lookup, written as descript-audio-codec writes it (same float32 ops, so
    the same codes): [N, d] vectors, [K, d] codebook -> [N] int64, the nearest l2-normalised row
    to each l2-normalised vector."""
    enc, book = F.normalize(vectors), F.normalize(codebook)                 # [N, d], [K, d]
    dist = (enc.pow(2).sum(1, keepdim=True) - 2 * enc @ book.t()
            + book.pow(2).sum(1, keepdim=True).t())                         # [N, K]
    return (-dist).max(1).indices


def _assign(samples: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[N, d], [K, d] -> [N] int64 cluster of each sample, in chunks of `CHUNK` rows."""
    return torch.cat([nearest_codes(part, centres) for part in samples.split(CHUNK)])


def kmeans(samples: torch.Tensor, clusters: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-assignment k-means (see the module docstring): [N, d] -> (centres [K, d], counts [K])."""
    samples = samples.detach().float()
    n, dim = samples.shape
    generator = torch.Generator().manual_seed(int(seed))
    if n >= clusters:
        start = torch.randperm(n, generator=generator)[:clusters]
    else:
        start = torch.randint(0, n, (clusters,), generator=generator)
    centres = samples[start.to(samples.device)]                                # [K, d]
    counts = torch.zeros(clusters, dtype=torch.float32, device=samples.device)
    for _ in range(iters):
        assigned = _assign(samples, centres)                                   # [N]
        counts = torch.bincount(assigned, minlength=clusters).float()          # [K]
        sums = torch.zeros(clusters, dim, dtype=torch.float64, device=samples.device)
        sums.index_add_(0, assigned, samples.double())                         # [K, d]
        means = (sums / counts.double().clamp_min(1)[:, None]).float()
        centres = torch.where((counts > 0)[:, None], means, centres)
    if iters > 0:
        counts = torch.bincount(_assign(samples, centres), minlength=clusters).float()
    return centres, counts
