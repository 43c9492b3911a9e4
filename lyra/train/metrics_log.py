"""Where metrics go: run_dir/metrics.jsonl always; W&B and TensorBoard when switched on.

Each record is one JSON object per line: ``{"split": "train"|"val"|"event", "step": N, ...}``.
Resuming from step N first drops the records after N (they belong to the abandoned future);
a new run (no --resume) starts the file afresh, dropping the records of an earlier attempt
that died before its first checkpoint. So the file always tells one consistent history.

W&B and TensorBoard are optional extras: asking for one that is not installed is a one-line
error at start-up (`lyra.core.extras`), not a failure mid-run; neither is ever imported otherwise.
Both get the scalars (``train/loss``, ``val/si_sdr``, ...) and, from `media`, each validation
clip's original and reconstruction as audio at the model's rate (``val/clip0/original``,
``val/clip0/reconstruction``) and its spectrogram picture (``val/clip0/spectrogram``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lyra.core.atomic import atomic_write
from lyra.core.errors import LyraError
from lyra.core.extras import check
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

    def media(self, step: int, clips: list[tuple[Any, Any, np.ndarray]], sample_rate: int) -> None:
        """Send validation clips to the trackers: (original [C, T], reconstruction [C, T], picture
        [H, W, 3] uint8) each. Nothing to do without a tracker."""
        if self._wandb is None and self._tensorboard is None:
            return
        for i, (original, reconstruction, picture) in enumerate(clips):
            sounds = {"original": _samples(original), "reconstruction": _samples(reconstruction)}   # [T, C] each
            if self._tensorboard is not None:
                for name, sound in sounds.items():
                    _tensorboard_audio(self._tensorboard, f"val/clip{i}/{name}", sound, sample_rate, step)
                self._tensorboard.add_image(f"val/clip{i}/spectrogram", picture, step, dataformats="HWC")
            if self._wandb is not None:
                import wandb

                media = {f"val/clip{i}/{name}": wandb.Audio(sound, sample_rate=sample_rate) for name, sound in sounds.items()}
                media[f"val/clip{i}/spectrogram"] = wandb.Image(picture)
                self._wandb.log(media, step=step)
        if self._tensorboard is not None:
            self._tensorboard.flush()

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


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file for reading back (`lyra plot`): a one-line
    `LyraError` for a missing, unreadable or corrupt file, or one without any record. Only the
    last line may be cut short (a run killed mid-write): it is skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LyraError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LyraError(f"{path}: cannot read it ({type(exc).__name__})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise LyraError(f"{path}: line {number} is not a JSON record (not a Lyra metrics file?)") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or "split" not in record:
            raise LyraError(f"{path}: line {number} is not a metrics record (no split and step)")
        records.append(record)
    if not any(r["split"] in ("train", "val") for r in records):
        raise LyraError(f"{path}: holds no training or validation records yet")
    return records


def check_trackers(cfg: LoggingConfig) -> None:
    """Fail early, in one line, when an optional tracker is switched on but not installed."""
    for on, package in ((cfg.wandb, "wandb"), (cfg.tensorboard, "tensorboard")):
        if on:
            check(package, package, f"logging.{package} = true")


def _open_wandb(cfg: LoggingConfig, run_dir: Path, config_dict: dict[str, Any]):
    import wandb

    return wandb.init(project=cfg.wandb_project, dir=str(run_dir), config=config_dict, resume="allow")


def _open_tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(run_dir) / "tensorboard"))


def _samples(audio: Any) -> np.ndarray:
    """[C, T] tensor -> [T, C] float32 in [-1, 1]."""
    return np.ascontiguousarray(audio.detach().float().cpu().clamp(-1, 1).numpy().T)


def _tensorboard_audio(writer, tag: str, sound: np.ndarray, sample_rate: int, step: int) -> None:
    """`SummaryWriter.add_audio` takes mono only: the same audio summary, with every channel."""
    import io

    import soundfile as sf
    from tensorboard.compat.proto.summary_pb2 import Summary

    buffer = io.BytesIO()
    sf.write(buffer, sound, sample_rate, subtype="PCM_16", format="WAV")
    audio = Summary.Audio(sample_rate=sample_rate, num_channels=sound.shape[1], length_frames=sound.shape[0],
                          encoded_audio_string=buffer.getvalue(), content_type="audio/wav")
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, audio=audio)]), step)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    return value
