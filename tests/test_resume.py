"""Exact resume, the saved state, atomic checkpoint writes, and SIGINT/SIGTERM handling."""

import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lyra.train.engine as engine
from lyra.model.checkpoint import read_checkpoint
from lyra.train.metrics_log import read_metrics
from lyra.train.state import capture_rng, restore_rng

from cli_helpers import default_signal_actions
from train_helpers import make_data, tiny_config, tiny_config_dict

REPO = Path(__file__).resolve().parents[1]


def _train_losses(run_dir):
    return [(r["step"], r["loss"], r["kl"], r["lr"], r["kl_weight"])
            for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]


@pytest.mark.parametrize("workers", [0, 2])
def test_half_plus_resume_plus_half_equals_straight_through(tmp_path, workers):
    make_data(tmp_path)  # 3 files x 0.5 s: 16 crops of 4096, 8 batches of 2 per epoch
    steps = 6            # x grad_accum 2 = 12 batches: the run crosses an epoch boundary after resuming
    tables = dict(optim={"max_steps": steps, "grad_accum": 2, "warmup_steps": 2}, data={"num_workers": workers},
                  loss={"kl_anneal": 4, "kl_anneal_unit": "epochs"},
                  logging={"eval_every": 2}, checkpoint={"save_every": 5})
    straight = tiny_config(tmp_path, run_dir=str(tmp_path / "straight"), **tables)
    split = tiny_config(tmp_path, run_dir=str(tmp_path / "split"), **tables)

    engine.train(straight)
    first = engine.train(split, until_step=steps // 2)
    assert first.step == 3 and (tmp_path / "split" / "latest.pt").exists()
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    np.random.seed(1)
    engine.train(split, resume=True)

    a, b = _train_losses(tmp_path / "straight"), _train_losses(tmp_path / "split")
    assert [r[0] for r in a] == list(range(1, steps + 1))
    assert a == b                                            # identical floats, step by step
    wa = read_checkpoint(tmp_path / "straight" / "latest.pt")
    wb = read_checkpoint(tmp_path / "split" / "latest.pt")
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key])
    assert wa["train"]["batches"] == wb["train"]["batches"] == 12
    sa, sb = wa["train"]["optimizer"]["state"], wb["train"]["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    val_a = [r for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if r["split"] == "val"]
    val_b = [r for r in read_metrics(tmp_path / "split" / "metrics.jsonl") if r["split"] == "val"]
    assert val_a == val_b


def test_a_resumed_run_drops_the_abandoned_log_records(tmp_path):
    make_data(tmp_path)
    cfg = tiny_config(tmp_path, optim={"max_steps": 5}, checkpoint={"save_every": 2})
    engine.train(cfg, until_step=3)                     # saves at 2 and at the stop (3)
    (tmp_path / "run" / "latest.pt").unlink()           # pretend the run died after step 3's log, before its save
    os.link(tmp_path / "run" / "checkpoints" / "step-00000002.pt", tmp_path / "run" / "latest.pt")
    engine.train(cfg, resume=True)
    assert [r[0] for r in _train_losses(tmp_path / "run")] == [1, 2, 3, 4, 5]


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.standard_normal())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.standard_normal())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    make_data(tmp_path)
    cfg = tiny_config(tmp_path, optim={"max_steps": 4}, checkpoint={"save_every": 2})
    engine.train(cfg, until_step=2)
    before = (tmp_path / "run" / "latest.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:      # half-written file...
            handle.truncate(1000)
        raise KeyboardInterrupt            # ...and the process is killed

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        engine.train(cfg, resume=True)
    run = tmp_path / "run"
    assert (run / "latest.pt").read_bytes() == before
    assert read_checkpoint(run / "latest.pt")["train"]["step"] == 2
    assert not [p for p in run.rglob(".*.tmp")] and not (run / "checkpoints" / "step-00000004.pt").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, signum):
    make_data(tmp_path)
    config = tmp_path / "run.toml"
    from lyra.core.toml import dumps

    data = tiny_config_dict(tmp_path, optim={"max_steps": 100000, "warmup_steps": 10},
                            logging={"progress": "lines", "log_every": 1, "eval_every": 100000},
                            checkpoint={"save_every": 100000}, data={"num_workers": 1})
    config.write_text(dumps(data))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lyra", "train", str(config)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signal_actions(signum))
    seen = []
    for line in proc.stderr:           # a progress line per step: signal once step 2 is done (no clock)
        seen.append(line)
        step = re.match(r"training (\d+)/", line)
        if step and int(step.group(1)) >= 2:
            break
    proc.send_signal(signum)
    _, rest = proc.communicate(timeout=600)
    err = "".join(seen) + rest
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    last = max(r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl"))
    state = read_checkpoint(tmp_path / "run" / "latest.pt")
    assert state["train"]["step"] == last >= 2
    assert f"stopped at step {last}: saved" in err and "--resume" in err
