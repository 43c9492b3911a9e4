"""Channel mapping from a file's channels to the model's: mono is duplicated; more channels
than the model takes is an error unless downmixed (the mean of all channels, duplicated)."""

from __future__ import annotations

import torch

from lyra.core.errors import LyraError


def check_channels(have: int, want: int, downmix: bool, name: str) -> None:
    """Raise unless `have` channels can become `want` (`mix_channels`, then `expand_channels`)."""
    if have == want or have == 1:
        return
    if have > want and downmix:
        return
    if have > want:
        raise LyraError(
            f"{name}: has {have} channels but the model takes {want}; pass --downmix to mix them down"
        )
    raise LyraError(f"{name}: has {have} channels; the model takes {want} (or mono, which is duplicated)")


def mix_channels(x: torch.Tensor, want: int, downmix: bool) -> torch.Tensor:
    """[C, n] -> [C or 1, n]: the downmix (mean of all channels) when asked and needed."""
    if x.shape[0] > want and downmix:
        return x.mean(dim=0, keepdim=True)   # [C, n] -> [1, n]
    return x


def expand_channels(x: torch.Tensor, want: int) -> torch.Tensor:
    """[1 or want, n] -> [want, n]: mono is duplicated."""
    return x.expand(want, -1) if x.shape[0] == 1 and want > 1 else x   # [1, n] -> [want, n] (a view)
