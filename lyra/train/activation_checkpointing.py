"""Activation checkpointing per residual unit: keep only each unit's input, recompute the rest.

Long crops on a small GPU run out of memory on activations, most of which live inside the
residual units; with this switch on, each unit's forward runs under
`torch.utils.checkpoint.checkpoint` (non-reentrant), so its intermediate activations are
recomputed during the backward pass instead of stored. Gradients are unchanged.

The unit's `forward` is wrapped in place, so parameter names and checkpoints stay exactly as
without it.
"""

from __future__ import annotations

import functools

from torch.utils.checkpoint import checkpoint

from lyra import registry
from lyra.core.errors import LyraError
from lyra.model.vae import VAE


def checkpoint_residual_units(model: VAE) -> int:
    """Wrap every residual unit of `model` (the config's registered class); returns how many."""
    factory = registry.get("residual_unit", model.config.residual_unit)
    if not isinstance(factory, type):
        raise LyraError(
            f"runtime.activation_checkpointing: residual unit '{model.config.residual_unit}' is built by "
            f"a function, not a class, so its units cannot be found in the model"
        )
    count = 0
    for module in model.modules():
        if isinstance(module, factory) and not getattr(module, "_lyra_checkpointed", False):
            module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)
            module._lyra_checkpointed = True
            count += 1
    return count
