"""Shared helpers for the training tests: tiny audio folders and tiny run configs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from lyra.train.config import TrainConfig


def write_tones(folder: Path, files: int = 3, seconds: float = 0.5, sample_rate: int = 44100,
                channels: int = 2, seed: int = 0, amplitude: float = 0.5, prefix: str = "tone") -> list[Path]:
    """Harmonic tones with a pitch glide, one per file (different pitches), as 16-bit WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    for i in range(files):
        f0 = rng.uniform(110, 440) * (1 + 0.2 * t / max(seconds, 1e-9))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        mono = sum(np.sin(k * phase) / k for k in range(1, 6))
        mono = amplitude * mono / np.abs(mono).max()
        data = np.stack([mono * (0.6 + 0.4 * c) for c in range(channels)], axis=1)  # [T, C]
        path = folder / f"{prefix}-{i}.wav"
        sf.write(path, data, sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_config_dict(tmp_path: Path, **tables: Any) -> dict[str, Any]:
    """A run of a few steps of the small model on 4096-sample crops, everything in tmp_path."""
    base = {
        "run_dir": str(tmp_path / "run"),
        "seed": 0,
        "model": {"base_channels": 16, "latent_dim": 16, "c_mults": [1, 2, 2, 4, 4]},  # ModelConfig.small()
        "data": {"train_dir": str(tmp_path / "train"), "val_dir": str(tmp_path / "val"), "segment_length": 4096,
                 "batch_size": 2, "num_workers": 0, "val_clips": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "max_steps": 4},
        "loss": {"kl_anneal": 2, "kl_anneal_unit": "steps"},
        # One thread: on a shared 2-core machine, two busy-waiting threads per process crawl.
        "runtime": {"device": "cpu", "precision": "fp32", "threads": 1},
        # No matplotlib figures (about a second per validation): tests/test_plots.py draws them.
        "logging": {"log_every": 1, "eval_every": 2, "val_audio": 1, "progress": "off", "plots": False},
        "checkpoint": {"save_every": 2, "keep_last": 2},
    }
    return merge(base, tables)


def tiny_config(tmp_path: Path, **tables: Any) -> TrainConfig:
    return TrainConfig.from_mapping(tiny_config_dict(tmp_path, **tables))


def make_data(tmp_path: Path, train_files: int = 3, val_files: int = 1, seconds: float = 0.5) -> None:
    write_tones(tmp_path / "train", train_files, seconds, seed=1)
    write_tones(tmp_path / "val", val_files, seconds, seed=2)


def torchrun_train(tmp_path: Path, config: Path, *args: str, timeout: int = 600) -> "subprocess.CompletedProcess":
    """`torchrun --standalone --nproc_per_node=2 -m lyra train CONFIG ARGS...` on two CPU processes
    (one thread each) in `tmp_path`; the run must succeed."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "lyra", "train", str(config), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def killed_and_resumed(tmp_path: Path, tables: dict[str, Any], steps: int = 6, kill_at: int = 4) -> None:
    """Two `lyra train` runs of `tables` (subprocesses, as users run them): "straight" to `steps`,
    and "killed", SIGKILLed once its step-`kill_at` checkpoint save has begun, then `--resume`d to
    `steps`. Their run folders are tmp_path/straight and tmp_path/killed. Needs `save_every`
    dividing `kill_at`; synchronised on the checkpoint file's creation (inotify), never on time."""
    import signal
    import subprocess
    import sys

    from cli_helpers import CreatedFiles, lyra_env
    from lyra.core.toml import dumps

    repo = Path(__file__).resolve().parents[1]
    for name, max_steps in (("straight", steps), ("killed", 100000)):
        (tmp_path / f"{name}.toml").write_text(dumps(tiny_config_dict(
            tmp_path, run_dir=str(tmp_path / name), **merge(tables, {"optim": {"max_steps": max_steps}}))))
    env = lyra_env(PYTHONPATH=str(repo))
    checkpoints = tmp_path / "killed" / "checkpoints"
    checkpoints.mkdir(parents=True)
    watch = CreatedFiles(checkpoints)
    proc = subprocess.Popen([sys.executable, "-m", "lyra", "train", str(tmp_path / "killed.toml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        watch.wait_for(lambda name: f"step-{kill_at:08d}" in name, proc)   # the save has begun
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        watch.close()
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    for args in (["train", str(tmp_path / "straight.toml")],
                 ["train", str(tmp_path / "killed.toml"), "--resume", "--set", f"optim.max_steps={steps}"]):
        done = subprocess.run([sys.executable, "-m", "lyra", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
