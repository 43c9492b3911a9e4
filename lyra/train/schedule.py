"""The learning rate as a pure function of the step (nothing to save and restore but the step).

Linear warm-up from 0 to `lr` over `warmup_steps`, then down to `min_lr` at `max_steps` along
a half cosine or a line, or flat (`constant`).
"""

from __future__ import annotations

import math

from lyra.train.config import OptimConfig


def learning_rate(step: int, cfg: OptimConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    if cfg.schedule == "cosine":
        progress = 0.5 * (1.0 - math.cos(math.pi * progress))
    return cfg.lr + (cfg.min_lr - cfg.lr) * progress
