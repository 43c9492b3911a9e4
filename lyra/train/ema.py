"""An exponential moving average (EMA) of the generator's weights.

After every optimizer step that updated the weights (a skipped step leaves the EMA alone),
with ``step`` the number of optimizer steps done:

    step <= start_step:  ema = weights                       (a copy: the average starts later)
    step >  start_step:  ema = decay * ema + (1 - decay) * weights

computed as ``ema.lerp_(weights, 1 - decay)`` in the weights' dtype, so a weight that does not
move (a frozen encoder) keeps its EMA exactly. Every floating-point entry of the model's
``state_dict`` takes part (the weights, and buffers if any), under the same names, so the
EMA is itself a state dict of the model: checkpoints store it beside the weights ("ema"),
`lyra.model.checkpoint.load_model` loads it, and validation runs with it swapped in
(`swapped_in`), which leaves the training weights bit for bit as they were.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from lyra.core.errors import LyraError


class EMA:
    def __init__(self, model: nn.Module, decay: float, start_step: int) -> None:
        self.decay = float(decay)
        self.start_step = int(start_step)
        # References to the live tensors (the optimizer updates them in place).
        self._live = {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}
        self.shadow = {k: v.detach().clone() for k, v in self._live.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the current weights after optimizer step number `step` (1-based)."""
        names = list(self._live)
        live = [self._live[k].detach() for k in names]
        shadow = [self.shadow[k] for k in names]
        if step <= self.start_step:
            torch._foreach_copy_(shadow, live)
        else:
            torch._foreach_lerp_(shadow, live, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights, on the CPU, named as the model's state dict."""
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        missing = [k for k in self.shadow if k not in state]
        extra = [k for k in state if k not in self.shadow]
        if missing or extra:
            what = f"no {missing[0]}" if missing else f"unexpected {extra[0]}"
            raise LyraError(f"{source}: the EMA weights do not match the model ({what})")
        for k, v in self.shadow.items():
            if state[k].shape != v.shape:
                raise LyraError(f"{source}: EMA weight {k} is {list(state[k].shape)}, the model's {list(v.shape)}")
            v.copy_(state[k])

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Run the model with the EMA weights; the training weights are restored afterwards."""
        with torch.no_grad():
            backup = {k: v.detach().clone() for k, v in self._live.items()}
            for k, v in self._live.items():
                v.detach().copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in self._live.items():
                    v.detach().copy_(backup[k])
