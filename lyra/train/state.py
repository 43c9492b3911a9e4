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
      "adversarial": {                # only with [adversarial] enabled (lyra.train.discriminator_training)
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
`lyra.model.checkpoint`), where inference finds it. Random-number states are converted to tensors
and numbers (numpy's and Python's native states are tuples holding arrays, which a safe load
rejects).

A training state is input like any other: `check_train_state` and `check_optimizer_state`
check what a resumed run reads (keys, types, sizes) before anything uses it; each problem is a
one-line `LyraError` naming the file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lyra.core.errors import LyraError, kind_of
from lyra.model.stored_model import check_weights, config_from_state


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


@dataclass
class Position:
    """Where a run is (besides its weights, optimizers and random states): what each step
    advances, saved in the training state and restored on resume."""

    step: int = 0                 # optimizer steps done
    batches: int = 0              # micro-batches consumed (the data order's position)
    nonfinite_run: int = 0        # skipped steps in a row (non-finite, or fp16 overflow)
    audio_seconds: float = 0.0    # audio seen so far, all processes

    @classmethod
    def from_state(cls, train: dict[str, Any]) -> "Position":
        """The position a checked training state (`check_train_state`) records."""
        return cls(int(train["step"]), int(train["batches"]), int(train["nonfinite_run"]),
                   float(train["audio_seconds"]))


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


# ---------------------------------------------------------------------------------------
# Checks of what `lyra train --resume` reads, before anything uses it
# ---------------------------------------------------------------------------------------
_TRAIN_INTS = ("step", "batches", "nonfinite_run", "world_size")
_TRAIN_NUMBERS = ("best_val", "audio_seconds")


def check_train_state(state: dict[str, Any], source: str | Path) -> None:
    """A checkpoint (from `read_checkpoint`) that a run can resume from: its weights fit its
    config and its "train" table has every key `lyra.train.run_setup.restore` reads, with sound types."""
    source = str(source)
    if "export_weights" in state:
        raise LyraError(f"{source}: is an exported model (`lyra export`: weights only), with no training state "
                        f"to resume from; start a new run from it with --init-from")
    if "train" not in state:
        raise LyraError(f"{source}: has no training state to resume from")
    config = config_from_state(state, source)
    check_weights(config, state["model"], source)
    train = state["train"]
    for key in (*_TRAIN_INTS, *_TRAIN_NUMBERS, "optimizer", "rng"):
        if key not in train:
            raise LyraError(f"{source}: training state has no '{key}'; it cannot be resumed")
    for key in _TRAIN_INTS:
        value = train[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "world_size" else 0):
            raise LyraError(f"{source}: training state '{key}' must be a non-negative integer, got {value!r}")
    for key in _TRAIN_NUMBERS:
        if isinstance(train[key], bool) or not isinstance(train[key], (int, float)):
            raise LyraError(f"{source}: training state '{key}' must be a number, got {kind_of(train[key])}")
    optimizer = train["optimizer"]
    if (not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict)
            or not isinstance(optimizer.get("param_groups"), list)):
        raise LyraError(f"{source}: training state 'optimizer' is not an optimizer's state (state, param_groups)")
    if not isinstance(train.get("scaler", {}), dict):
        raise LyraError(f"{source}: training state 'scaler' must be a table, got {kind_of(train['scaler'])}")
    _check_rng(train["rng"], source)
    # Added with adversarial training and EMA; absent from older checkpoints.
    if not isinstance(train.get("best_metric", ""), str):
        raise LyraError(f"{source}: training state 'best_metric' must be a metric name, got {kind_of(train['best_metric'])}")
    threads = train.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LyraError(f"{source}: training state 'threads' must be a positive integer, got {threads!r}")
    adversarial = train.get("adversarial")
    if adversarial is not None and (not isinstance(adversarial, dict)
                                    or not isinstance(adversarial.get("discriminators"), dict)):
        raise LyraError(f"{source}: training state 'adversarial' must be a table with the discriminators' weights")


def _check_rng(rng: Any, source: str) -> None:
    """The random-number states of `capture_rng`, sized as this process's."""
    bad = f"{source}: training state 'rng' is damaged"
    if not isinstance(rng, dict) or not all(isinstance(rng.get(k), dict) for k in ("numpy", "python")):
        raise LyraError(f"{bad} (expected torch, numpy and python states)")
    torch_state, numpy_state, python_state = rng.get("torch"), rng["numpy"], rng["python"]
    if (not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8
            or torch_state.shape != torch.get_rng_state().shape):
        raise LyraError(f"{bad} (its torch state is not a generator state)")
    keys = numpy_state.get("keys")
    if (not isinstance(keys, torch.Tensor) or keys.shape != np.random.get_state()[1].shape
            or not isinstance(numpy_state.get("kind"), str)
            or not all(isinstance(numpy_state.get(k), (int, float)) for k in ("pos", "has_gauss", "cached_gaussian"))):
        raise LyraError(f"{bad} (its numpy state is not a generator state)")
    internal = python_state.get("state")
    if (not isinstance(internal, torch.Tensor) or internal.shape != (len(random.getstate()[1]),)
            or not isinstance(python_state.get("version"), int)
            or not isinstance(python_state.get("gauss_next"), (float, type(None)))):
        raise LyraError(f"{bad} (its python state is not a generator state)")
    cuda = rng.get("cuda", [])
    if not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda):
        raise LyraError(f"{bad} (its cuda states are not generator states)")


def check_optimizer_state(saved: dict[str, Any], optimizer: torch.optim.Optimizer, source: str | Path) -> None:
    """`saved` (a checked train state's "optimizer") fits `optimizer`: the same parameter
    groups and sizes, and every per-parameter state tensor shaped like its parameter."""
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise LyraError(f"{source}: the optimizer state has {len(groups)} parameter groups, the model's optimizer "
                        f"{len(optimizer.param_groups)}")
    for i, (group, live) in enumerate(zip(groups, optimizer.param_groups)):
        ids = group.get("params") if isinstance(group, dict) else None
        if not isinstance(ids, list) or len(ids) != len(live["params"]):
            count = len(ids) if isinstance(ids, list) else "no"
            raise LyraError(f"{source}: optimizer parameter group {i} has {count} parameters, the model's has "
                            f"{len(live['params'])}")
        for index, param in zip(ids, live["params"]):
            entry = saved["state"].get(index, {})
            if not isinstance(entry, dict):
                raise LyraError(f"{source}: optimizer state of parameter {index} is {kind_of(entry)}, not a table")
            for name, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise LyraError(f"{source}: optimizer state '{name}' of parameter {index} is "
                                    f"{list(value.shape)}, the parameter is {list(param.shape)}")
