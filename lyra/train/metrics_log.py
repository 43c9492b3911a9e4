"""Where metrics go: run_dir/metrics.jsonl always; W&B and TensorBoard when switched on.

Each record is one JSON object per line: ``{"split": "train"|"val"|"event", "step": N, ...}``.
Resuming from step N first drops the records after N (they belong to the abandoned future);
a new run (no --resume) starts the file afresh, dropping the records of an earlier attempt
that died before its first checkpoint. So the file always tells one consistent history.

W&B and TensorBoard are optional extras: asking for one that is not installed is a one-line
error at start-up, not a failure mid-run; neither is ever imported otherwise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lyra.atomic import atomic_write
from lyra.errors import LyraError
from lyra.train.config import LoggingConfig


class MetricsLog:
    def __init__(self, run_dir: Path, cfg: LoggingConfig, config_dict: dict[str, Any], resume_step: int | None = None) -> None:
        """`resume_step`: the step a resumed run continues from (None: a new run)."""
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None:
            self._truncate_after(resume_step)
        # A new run (resume_step None) starts a new history.
        self._file = self.path.open("a" if resume_step is not None else "w", encoding="utf-8")
        self._wandb = _open_wandb(cfg, run_dir, config_dict) if cfg.wandb else None
        self._tensorboard = _open_tensorboard(run_dir) if cfg.tensorboard else None

    def write(self, split: str, step: int, values: dict[str, Any]) -> None:
        record = {"split": split, "step": step, **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        numbers = {f"{split}/{k}": v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)
        if self._tensorboard is not None:
            for key, value in numbers.items():
                self._tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tensorboard is not None:
            self._tensorboard.close()

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        with atomic_write(self.path) as f:
            f.write("".join(line + "\n" for line in kept).encode())


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (skipping a truncated last line)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def check_trackers(cfg: LoggingConfig) -> None:
    """Fail early, in one line, when an optional tracker is switched on but not installed."""
    import importlib.util

    for on, package in ((cfg.wandb, "wandb"), (cfg.tensorboard, "tensorboard")):
        if on and importlib.util.find_spec(package) is None:
            raise LyraError(f"logging.{package} = true needs the '{package}' package: pip install 'lyra-codec[{package}]'")


def _open_wandb(cfg: LoggingConfig, run_dir: Path, config_dict: dict[str, Any]):
    import wandb

    return wandb.init(project=cfg.wandb_project, dir=str(run_dir), config=config_dict, resume="allow")


def _open_tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(run_dir) / "tensorboard"))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    return value
