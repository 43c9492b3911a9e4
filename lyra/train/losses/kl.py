"""The KL term of the VAE's loss (`kl_divergence`, computed by the ``vae`` bottleneck) and its
annealing schedule."""

from __future__ import annotations

import math
from typing import Literal

import torch

from lyra.core.errors import LyraError
from lyra.model.bottlenecks.gaussian import kl_divergence  # noqa: F401 (the KL term's home)


def kl_weight(progress: float, target: float, duration: float, floor: float = 0.0,
              shape: Literal["linear", "cosine"] = "linear") -> float:
    """The KL weight after `progress` steps (or epochs) of a `duration`-long anneal.

    Rises from `floor` to `target`: linearly, or along a half cosine (slow start and end);
    `target` from then on. ``duration <= 0`` means no annealing.
    """
    if duration <= 0 or progress >= duration:
        return float(target)
    f = max(progress, 0.0) / duration
    if shape == "cosine":
        f = 0.5 * (1.0 - math.cos(math.pi * f))
    elif shape != "linear":
        raise LyraError(f"loss.kl_anneal_shape: expected 'linear' or 'cosine', got {shape!r}")
    return float(floor + (target - floor) * f)
