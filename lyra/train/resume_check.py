"""What `lyra train --resume` does when the config differs from the one the run was saved with.

`--resume` continues a run exactly (the same losses, step by step, as a run never stopped)
only with the settings it was saved with. The checkpoint stores the run's config
(``train.config``); on resume every setting is compared with it:

- **refused** (one-line error naming every such key with both values): the settings the data
  order, the crops or the saved state depend on -- ``seed``, ``data.train_dir``,
  ``data.val_dir``, ``data.val_fraction``, ``data.extensions``, ``data.segment_length``,
  ``data.batch_size``, ``data.silence_threshold_db``, ``data.peak``, ``data.crop_attempts``,
  ``optim.grad_accum``, and, while adversarial training stays on, ``adversarial.discriminators``,
  ``adversarial.options`` and ``adversarial.balancer`` (the saved discriminators would not fit).
  (A different ``[model]`` is refused too, by `lyra.train.run_setup`.) To train on with such a change,
  start a new run from the weights: ``--init-from run_dir/latest.pt``.
- **warned** (the run continues with the new values, differently from here on; the warning
  names each key with both values): every other setting that changes the numbers --
  the rest of ``[optim]`` (``max_steps`` too: it shapes the cosine and linear schedules),
  ``[loss]``, ``runtime.threads``, ``runtime.precision``, ``runtime.compile``,
  ``runtime.device``, ``runtime.activation_checkpointing``, ``data.val_clips``,
  ``adversarial.enabled`` (switched on:
  the discriminators start from scratch; off: their state is dropped), the other
  ``[adversarial]`` values while it stays on, and ``[ema]`` likewise. The number of CPU threads
  in effect is compared too, on the CPU (``threads = 0`` takes the machine's default, and a
  different count changes results from the next step on).
- **ignored**: ``run_dir``, ``data.num_workers`` (the data order does not depend on it),
  ``runtime.max_nonfinite``, ``[logging]``, ``checkpoint.save_every``, ``checkpoint.keep_last``.
  A different ``checkpoint.best_metric`` is `lyra.train.run_setup`'s to report: the best value starts over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lyra.core.toml import to_dict
from lyra.core.errors import LyraError
from lyra.train.config import TrainConfig

REFUSED = {"seed", "data.train_dir", "data.val_dir", "data.val_fraction", "data.extensions", "data.segment_length",
           "data.batch_size", "data.silence_threshold_db", "data.peak", "data.crop_attempts", "optim.grad_accum"}
ADVERSARIAL_STATE = {"adversarial.discriminators", "adversarial.options", "adversarial.balancer"}
IGNORED = {"run_dir", "data.num_workers", "runtime.max_nonfinite", "checkpoint.save_every", "checkpoint.keep_last",
           "checkpoint.best_metric"}   # run_setup says what a new best metric does (the best value starts over)
IGNORED_TABLES = {"logging", "model"}   # [model] is compared by run_setup (its own message)
PATHS = {"data.train_dir", "data.val_dir"}


def _flat(cfg: TrainConfig) -> dict[str, Any]:
    out = {}
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict) and key not in ("run_dir",):
            if key in IGNORED_TABLES:
                continue
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    return out


def _same(key: str, a: Any, b: Any) -> bool:
    if key in PATHS and a is not None and b is not None:
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def config_changes(saved: TrainConfig, cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(refused changes, warned changes), each as ``key old -> new`` in config order."""
    old, new = _flat(saved), _flat(cfg)
    adversarial_kept = saved.adversarial.enabled and cfg.adversarial.enabled
    ema_kept = saved.ema.enabled and cfg.ema.enabled
    refused, warned = [], []
    for key, value in new.items():
        before = old.get(key)
        if key in IGNORED or _same(key, before, value):
            continue
        if key.startswith("adversarial.") and key != "adversarial.enabled" and not adversarial_kept:
            continue   # off before or now: its other settings had, or have, no effect
        if key.startswith("ema.") and key != "ema.enabled" and not ema_kept:
            continue
        change = f"{key} {_show(before)} -> {_show(value)}"
        if key in REFUSED or key in ADVERSARIAL_STATE:
            refused.append(change)
        else:
            warned.append(change)
    return refused, warned


def check_resume_config(saved_config: Any, cfg: TrainConfig, source: str | Path,
                        threads: tuple[int, int] | None) -> list[str]:
    """Refuse (a `LyraError`) or return the warnings (see the module doc) for `cfg` against the
    run's saved config; the caller prints them once the rest of the saved state checks out.

    `threads` is (saved, current) CPU thread counts for a CPU run, else None.
    """
    saved_config = saved_config if isinstance(saved_config, dict) else {}
    try:   # [model] is compared by run_setup: parse the rest
        saved = TrainConfig.from_mapping({k: v for k, v in saved_config.items() if k != "model"}, "")
    except LyraError as exc:
        return [f"{source}: its saved config cannot be read ({exc}); the settings cannot be compared"]
    refused, warned = config_changes(saved, cfg)
    if refused:
        raise LyraError(
            f"{source}: an exact resume needs the run's settings, and the config changes "
            f"{'; '.join(refused)}; put them back, or start a new run from this one's weights "
            f"(--init-from {source}) in a new run_dir"
        )
    if threads is not None and threads[0] != threads[1] and not any(w.startswith("runtime.threads ") for w in warned):
        warned.append(f"CPU threads in use {threads[0]} -> {threads[1]}")
    if warned:
        return [f"resuming with changed settings: {'; '.join(warned)}; the run continues with them, "
                f"so not as the uninterrupted run would have"]
    return []
