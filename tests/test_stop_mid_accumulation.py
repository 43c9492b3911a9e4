"""A stop between micro-batches (issue 22, item 10): with `optim.grad_accum` > 1, SIGINT or
SIGTERM is acted on before the next micro-batch, not after thousands of them. The unfinished
step is undone (gradients dropped; data position, learning rates, random states, buffers and
the balancer's EMA put back), so the checkpoint saved is the last completed step's and
`--resume` continues exactly as a run that was never stopped.

No timing: the in-process tests raise the signal from inside a chosen micro-batch; the
end-to-end test waits for a harness's line saying the first micro-batch has begun.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import lyra.train.engine as engine
import lyra.train.steps as steps
from lyra.model.checkpoint import read_checkpoint
from lyra.train.interrupt import SIGNALS
from lyra.train.metrics_log import read_metrics

from cli_helpers import default_signal_actions, lyra_env
from train_helpers import make_data, tiny_config, tiny_config_dict


class Escaped(Exception):
    """A signal reached the test's own handler: the run did not take it."""


@pytest.fixture
def outer_handlers():
    def escape(signum, frame):
        raise Escaped(signum)

    saved = {s: signal.signal(s, escape) for s in SIGNALS}
    yield
    for s, old in saved.items():
        signal.signal(s, old)


@pytest.fixture
def micro_batches(monkeypatch):
    """Counts micro-batches (by the step they belong to); each draws from the global RNG, as a
    plugin's dropout would; `signal_at[0] = n` raises SIGINT inside the n-th."""
    calls: list[int] = []
    signal_at: list[int | None] = [None]
    real = steps.TrainingStep._micro_step

    def micro_step(self, *args, **kwargs):
        calls.append(self.position.step)
        torch.rand(())
        if len(calls) == signal_at[0]:
            signal.raise_signal(signal.SIGINT)     # noted by the run's handler; the micro-batch goes on
        return real(self, *args, **kwargs)

    monkeypatch.setattr(steps.TrainingStep, "_micro_step", micro_step)
    return calls, signal_at


def _equal(a, b, where="train") -> None:
    """Nested checkpoint state, tensors compared exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def _train_losses(run_dir):
    return [(r["step"], r["loss"], r["kl"], r["lr"]) for r in read_metrics(run_dir / "metrics.jsonl")
            if r["split"] == "train"]


def _stop_resume_and_compare(tmp_path, micro_batches, **tables) -> None:
    calls, signal_at = micro_batches
    accum = tables["optim"]["grad_accum"]
    straight = tiny_config(tmp_path, run_dir=str(tmp_path / "straight"), **tables)
    to_two = tiny_config(tmp_path, run_dir=str(tmp_path / "to_two"), **tables)
    stopped = tiny_config(tmp_path, run_dir=str(tmp_path / "stopped"), **tables)

    engine.train(straight)
    engine.train(to_two, until_step=2)               # the state after step 2, saved as a stop saves it
    calls.clear()
    signal_at[0] = 2 * accum + 1                      # inside step 3's first micro-batch
    result = engine.train(stopped)
    assert result.interrupted == signal.SIGINT
    assert result.step == 2                           # step 3 was not finished, nor taken
    assert calls == [0] * accum + [1] * accum + [2]   # stopped before its second micro-batch

    a = read_checkpoint(tmp_path / "to_two" / "latest.pt")
    b = read_checkpoint(tmp_path / "stopped" / "latest.pt")
    _equal(a["model"], b["model"], "model")
    del a["train"]["config"], b["train"]["config"]   # their run_dirs differ
    _equal(a["train"], b["train"])                    # optimizer, rng, data position: as after step 2

    signal_at[0] = None
    engine.train(stopped, resume=True)
    assert _train_losses(tmp_path / "stopped") == _train_losses(tmp_path / "straight")
    a = read_checkpoint(tmp_path / "straight" / "latest.pt")
    b = read_checkpoint(tmp_path / "stopped" / "latest.pt")
    _equal(a["model"], b["model"], "model")


def test_a_stop_between_micro_batches_undoes_the_step_and_resumes_exactly(tmp_path, outer_handlers,
                                                                            micro_batches):
    make_data(tmp_path)
    _stop_resume_and_compare(tmp_path, micro_batches, optim={"max_steps": 3, "grad_accum": 2, "warmup_steps": 1},
                             logging={"eval_every": 100}, checkpoint={"save_every": 100})


def test_the_undo_covers_the_discriminators_and_the_balancer(tmp_path, outer_handlers, micro_batches):
    make_data(tmp_path)
    _stop_resume_and_compare(
        tmp_path, micro_batches, optim={"max_steps": 3, "grad_accum": 2, "warmup_steps": 1},
        adversarial={"enabled": True, "balancer": True, "options": {"ms_stft": {"filters": 4, "n_ffts": [128, 256]}}},
        logging={"eval_every": 100}, checkpoint={"save_every": 100})


HARNESS = """
    import sys
    import lyra.train.steps as steps

    real = steps.TrainingStep._micro_step
    seen = []

    def micro_step(self, *args, **kwargs):
        if not seen:
            seen.append(1)
            sys.stderr.write("harness: first micro-batch\\n")
            sys.stderr.flush()
        return real(self, *args, **kwargs)

    steps.TrainingStep._micro_step = micro_step
    from lyra.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def test_lyra_train_with_a_huge_accumulation_stops_on_sigterm_at_once(tmp_path):
    """Before: with grad_accum = 10^9, SIGTERM and SIGINT (twice) were ignored for 500 s."""
    make_data(tmp_path)
    from lyra.core.toml import dumps

    config = tmp_path / "run.toml"
    config.write_text(dumps(tiny_config_dict(
        tmp_path, optim={"max_steps": 10, "grad_accum": 4096}, logging={"progress": "lines"})))
    harness = tmp_path / "harness.py"
    harness.write_text(textwrap.dedent(HARNESS))
    proc = subprocess.Popen([sys.executable, str(harness), "train", str(config)], cwd=tmp_path, env=lyra_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signal_actions(signal.SIGINT, signal.SIGTERM))
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line == "harness: first micro-batch\n":
                break
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=300)   # only bounds a broken run (before: 4096 micro-batches)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    err = "".join(seen) + rest
    # The first signal the run's handler saw (pending signals are handled lowest number first).
    assert proc.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT), err
    assert "stopped at step 0: saved" in err and "Traceback" not in err, err
    state = read_checkpoint(tmp_path / "run" / "latest.pt")["train"]
    assert state["step"] == 0 and state["batches"] == 0
