"""Another toolkit's tensors made plain Lyra weights: checked, and weight norm folded.

What every importer (`lyra import ...`) does to the tensors it read before mapping their
names: `check_tensors` refuses anything that is no trained weight (integer, sparse, empty,
NaN or infinite tensors), naming the file's key; `fold_weight_norm` replaces each
weight-normed convolution's magnitude ``g`` and direction ``v`` (``weight_g`` / ``weight_v``,
or ``parametrizations.weight.original0`` / ``original1``) by the one weight ``g * v / ||v||``
that convolution applies, computed by the function torch's weight-norm forward calls.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lyra.core.errors import LyraError
from lyra.model.stored_model import check_finite

_WEIGHT_NORM = {"weight_g": ("weight", 0), "weight_v": ("weight", 1),
                "parametrizations.weight.original0": ("weight", 0),
                "parametrizations.weight.original1": ("weight", 1)}


def check_tensors(raw: dict[str, torch.Tensor], src: Path | str) -> None:
    """Every tensor read is a dense, non-empty, finite floating-point array (named as in the file)."""
    for name, tensor in raw.items():
        if tensor.layout != torch.strided or not tensor.is_floating_point():
            raise LyraError(f"{src}: {name} is a {str(tensor.dtype).removeprefix('torch.')} tensor, "
                            f"not a dense floating-point weight")
        if tensor.numel() == 0:
            raise LyraError(f"{src}: {name} is empty (shape {list(tensor.shape)}); not a trained weight")
    check_finite(raw, str(src), "tensor")


def fold_weight_norm(raw: dict[str, torch.Tensor], src: Path | str,
                     prefix: str = "") -> tuple[dict[str, torch.Tensor], int]:
    """Replace each (magnitude g, direction v) pair by the weight g * v / ||v|| it stands for.

    ``torch._weight_norm(v, g, 0)`` is what both of torch's weight-norm APIs compute in the
    forward, so the folded weights are exactly the ones the source toolkit convolves with. Its
    operands are checked first (a convolution's [out, in, kernel] direction, a [out, 1, 1]
    magnitude, no all-zero direction: 0/0), and what it gives must be finite. Errors name the
    file's keys (`prefix` + the key in `raw`).
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, list[tuple[str, torch.Tensor] | None]] = {}
    for name, tensor in raw.items():
        for suffix, (plain, index) in _WEIGHT_NORM.items():
            if name.endswith("." + suffix):
                pairs.setdefault(name[: -len(suffix)] + plain, [None, None])[index] = (prefix + name, tensor)
                break
        else:
            out[name] = tensor.float()
    for name, (g, v) in pairs.items():
        if g is None or v is None:
            raise LyraError(f"{src}: {name} has half a weight norm (magnitude and direction must both be stored)")
        if name in out:
            raise LyraError(f"{src}: {name} is stored both plain and weight-normed")
        out[name] = _fold(g, v, src)
    return out, len(pairs)


def _fold(g: tuple[str, torch.Tensor], v: tuple[str, torch.Tensor], src: Path | str) -> torch.Tensor:
    """g * v / ||v|| (norms over all but dim 0) for one convolution, its operands checked first."""
    (g_name, g), (v_name, v) = g, v
    if v.dim() != 3 or 0 in v.shape:
        raise LyraError(f"{src}: {v_name} is {list(v.shape)}: conv weights of the wrong rank (a weight-normed "
                        f"convolution's direction is [out, in, kernel])")
    if tuple(g.shape) != (v.shape[0], 1, 1):
        raise LyraError(f"{src}: {g_name} is {list(g.shape)}; the magnitude of the {list(v.shape)} direction "
                        f"{v_name} is [{v.shape[0]}, 1, 1]")
    v, g = v.float(), g.float()
    if v.device.type == "meta":   # shapes only (a model's layout, checked without its weights)
        return torch._weight_norm(v, g, 0)
    zero = (v.flatten(1).abs().amax(dim=1) == 0).nonzero()   # [out, in * kernel] -> the all-zero rows
    if len(zero):
        raise LyraError(f"{src}: {v_name} is all zero for output channel {zero[0].item()}: weight norm's "
                        f"g * v / ||v|| is 0/0 there")
    weight = torch._weight_norm(v, g, 0)
    if not torch.isfinite(weight).all():   # ||v|| underflowing to 0, or g * v overflowing
        raise LyraError(f"{src}: folding the weight norm of {v_name} and {g_name} gives non-finite weights")
    return weight




def match_names(config, paths: dict[str, str], leaves: dict[str, str], weights: dict[str, torch.Tensor],
                source: Path | str, *, model: str, layout: str) -> dict[str, str]:
    """Lyra's weight name -> the other toolkit's, for every weight of the model `config` builds
    (`paths`: Lyra's module path -> theirs; `leaves`: Lyra's parameter name -> theirs). Every
    weight in `weights` must be used and every one wanted present, else a one-line `LyraError`
    ("cannot map X to Lyra's `model`", "no X ...; not `layout`")."""
    from lyra.model.vae import build_model

    with torch.device("meta"):
        expected = list(build_model(config).state_dict())
    wanted = {name: f"{paths[name.rsplit('.', 1)[0]]}.{leaves[name.rsplit('.', 1)[1]]}" for name in expected}
    left = sorted(set(weights) - set(wanted.values()))
    if left:
        more = f" and {len(left) - 1} more" if len(left) > 1 else ""
        raise LyraError(f"{source}: cannot map {left[0]}{more} to Lyra's {model}")
    missing = [(name, theirs) for name, theirs in wanted.items() if theirs not in weights]
    if missing:
        name, theirs = missing[0]
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LyraError(f"{source}: no {theirs} (for Lyra's {name}){more}; not {layout}")
    return wanted
