"""What a resumed run needs besides the weights, as plain data a `weights_only` load accepts.

The training state stored under a checkpoint's ``"train"`` key:

    {
      "step": int,                    # optimizer steps done
      "batches": int,                 # micro-batches consumed (the data order's position)
      "best_val": float,              # best validation loss so far (inf: none yet)
      "nonfinite_run": int,           # non-finite steps in a row at save time
      "audio_seconds": float,         # audio seen so far, all processes
      "world_size": int,
      "optimizer": {...},             # torch.optim state_dict (tensors and numbers)
      "scaler": {...},                # torch.amp.GradScaler state_dict ({} when unused)
      "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...], "numpy": {...}, "python": {...}},
      "config": {...},                # the run's TrainConfig as plain data
    }

Random-number states are converted to tensors and numbers (numpy's and Python's native
states are tuples holding arrays, which a safe load rejects).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


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
