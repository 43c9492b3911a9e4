"""AdamW parameter groups: which parameters get weight decay.

The rule (for the VAE and the discriminators alike):

- a parameter of rank 0 or 1 (biases, Snake's per-channel log-parameters, norm scales) is
  never decayed;
- a weight-norm magnitude is never decayed, whatever its shape: ``...parametrizations.<name>.original0``
  (`torch.nn.utils.parametrizations.weight_norm`, whose ``g`` is ``[C, 1, 1]``) and
  ``...weight_g`` (the older `torch.nn.utils.weight_norm`);
- a module may list parameter names in a ``no_weight_decay`` attribute (a tuple of strings,
  relative to that module: ``no_weight_decay = ("log_alpha", "log_beta")``); those
  parameters, and every parameter a parametrization derives from them
  (``parametrizations.<name>.original*``), are not decayed;
- every other parameter (conv and linear weights, weight-norm directions) is decayed.

Frozen parameters (``requires_grad=False``) are left out of the groups.
"""

from __future__ import annotations

from torch import nn


def no_decay_names(module: nn.Module) -> set[str]:
    """Names (as `named_parameters` gives them) of the parameters the rule above exempts."""
    declared: list[str] = []
    for prefix, sub in module.named_modules():
        names = getattr(sub, "no_weight_decay", ())
        if isinstance(names, str):
            names = (names,)
        for name in names:
            base = f"{prefix}.{name}" if prefix else name
            declared.append(base)
            declared.append(f"{prefix}.parametrizations.{name}" if prefix else f"parametrizations.{name}")
    out = set()
    for name, param in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        magnitude = (leaf == "original0" and ".parametrizations." in f".{name}") or leaf == "weight_g"
        if (param.dim() < 2 or magnitude
                or any(name == d or name.startswith(d + ".") for d in declared)):
            out.add(name)
    return out


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups of `module`'s trainable parameters: decayed, then not decayed."""
    exempt = no_decay_names(module)
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if name in exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
