"""The run directory's checkpoints: numbered snapshots, keep-last-K, latest and best.

    run_dir/checkpoints/step-00001000.pt   every `save_every` steps (and at a new best, at the end,
                                           and on SIGINT/SIGTERM); only the last K are kept
    run_dir/latest.pt                      the newest snapshot (what `--resume` continues)
    run_dir/best.pt                        the snapshot with the best value of checkpoint.best_metric

Each snapshot is a `lyra.model.checkpoint` file (written atomically by `save_checkpoint`: temporary
file, fsync, rename), so `lyra encode/decode --checkpoint run_dir/best.pt` works on it.
latest.pt and best.pt are hard links to snapshots (a copy where the file system has no hard
links), each swapped in atomically with a rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lyra.core.atomic import atomic_path
from lyra.model.checkpoint import save_checkpoint
from lyra.model.vae import VAE


class CheckpointStore:
    def __init__(self, run_dir: str | Path, keep_last: int) -> None:
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / "checkpoints"
        self.latest = self.run_dir / "latest.pt"
        self.best = self.run_dir / "best.pt"
        self.keep_last = keep_last

    def snapshot_path(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}.pt"

    def snapshots(self) -> list[Path]:
        return sorted(self.folder.glob("step-*.pt"))

    def save(self, step: int, model: VAE, train_state: dict[str, Any], best: bool = False,
             ema: dict[str, Any] | None = None) -> Path:
        """Write the snapshot for `step`, point latest (and best) at it, prune old ones.

        A snapshot already there for `step` is written again (atomically): latest.pt always
        holds the state as it is now (after a final validation, say), never an earlier one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_path(step)
        save_checkpoint(path, model, train_state, ema)
        _link(path, self.latest)
        if best:
            _link(path, self.best)
        for old in self.snapshots()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path


def _link(source: Path, target: Path) -> None:
    """Make `target` the same file as `source`, replacing it atomically."""
    if target.exists() and os.path.samefile(source, target):
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here: an atomic copy instead
        with atomic_path(target) as copy:
            shutil.copyfile(source, copy)
        return
    os.replace(tmp, target)
