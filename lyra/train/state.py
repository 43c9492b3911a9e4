"""What a resumed run needs besides the weights, as plain data a `weights_only` load accepts.

The training state stored under a checkpoint's ``"train"`` key:

    {
      "step": int,                    # optimizer steps done
      "batches": int,                 # micro-batches consumed (the data order's position)
      "best_val": float,              # best value of best_metric so far (+-inf: none yet)
      "best_metric": str,             # checkpoint.best_metric (absent in older checkpoints: "loss")
      "nonfinite_run": int,           # skipped steps in a row at save time (non-finite, or fp16 overflow)
      "audio_seconds": float,         # audio seen so far, all processes
      "world_size": int,
      "threads": int,                 # CPU threads torch used (compared on resume; absent in older ones)
      "optimizer": {...},             # torch.optim state_dict (tensors and numbers)
      "scaler": {...},                # torch.amp.GradScaler state_dict ({} when unused)
      "adversarial": {                # only with [adversarial] enabled (lyra.train.adversary)
        "discriminators": {name: state_dict},
        "optimizer": {...}, "scaler": {...},
        "balancer": {"sums": {...}, "counts": {...}} | {},
      },
      "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...], "numpy": {...}, "python": {...}},
      "config": {...},                # the run's TrainConfig as plain data
      "start": {                      # how the run began (`RunStart`); absent before fine-tuning existed
        "init_from": str | None,      #   the checkpoint step 0's weights came from (None: random init)
        "freeze_encoder": bool,       #   encoder frozen, left out of the optimizer
        "model_from_checkpoint": bool,  # the config had no [model] table: the model is init_from's
      },
    }

The EMA of the weights ([ema]) is not in here: it is the checkpoint's top-level "ema" (see
`lyra.checkpoint`), where inference finds it. Random-number states are converted to tensors
and numbers (numpy's and Python's native states are tuples holding arrays, which a safe load
rejects).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lyra.errors import LyraError


def capture_rng() -> dict[str, Any]:
    """The process's torch, CUDA, numpy and Python random states as tensors and numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng` (CUDA states only where as many GPUs are visible)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))


@dataclass(frozen=True)
class RunStart:
    """How a run began, fixed for its whole life: `lyra train --init-from CKPT [--freeze-encoder]`.

    A resumed run reads it from its checkpoint (so `--resume` needs neither flag again), and
    writes it into every checkpoint it saves.
    """

    init_from: str | None = None          # the checkpoint step 0's weights came from (None: random init)
    freeze_encoder: bool = False          # the encoder's parameters do not train (not in the optimizer)
    model_from_checkpoint: bool = False   # the run config had no [model] table; init_from's model was taken

    def to_state(self) -> dict[str, Any]:
        return {"init_from": self.init_from, "freeze_encoder": self.freeze_encoder,
                "model_from_checkpoint": self.model_from_checkpoint}

    @classmethod
    def from_state(cls, train: dict[str, Any], source: str | Path) -> "RunStart":
        """The "start" table of a checked training state (absent: a run from random weights
        that trains everything, as every run did before fine-tuning existed)."""
        start = train.get("start", {})
        if not isinstance(start, dict):
            raise LyraError(f"{source}: training state 'start' must be a table, got {type(start).__name__}")
        init_from = start.get("init_from")
        if init_from is not None and not isinstance(init_from, str):
            raise LyraError(f"{source}: training state 'start.init_from' must be a path, got {init_from!r}")
        flags = {}
        for key in ("freeze_encoder", "model_from_checkpoint"):
            value = start.get(key, False)
            if not isinstance(value, bool):
                raise LyraError(f"{source}: training state 'start.{key}' must be true or false, got {value!r}")
            flags[key] = value
        if flags["model_from_checkpoint"] and init_from is None:
            raise LyraError(f"{source}: training state 'start' takes its model from a checkpoint but names none")
        return cls(init_from, **flags)
