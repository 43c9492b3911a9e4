"""The KL term of the VAE's loss and its annealing schedule."""

from __future__ import annotations

import math
from typing import Literal

import torch

from lyra.core.errors import LyraError


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over every element (not summed)."""
    mean, logvar = mean.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mean.square() - logvar.exp())


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
