"""A stop is idempotent: once SIGINT/SIGTERM has asked a run to stop, more of them (Ctrl-C
twice; under torchrun every worker gets Ctrl-C from the terminal and again from the agent)
change nothing until the run has saved its checkpoint and returned.

The in-process tests raise the signals in this thread (`signal.raise_signal` runs the handler
before it returns). The end-to-end test synchronises on the run's output and on a FIFO, never
on time: it sends SIGINT after step 2's progress line; the run then stops and starts its final
save, where a harness around `lyra train` announces itself and waits on a FIFO the test holds
open; the test sends SIGINT and SIGTERM and only then closes the FIFO, so both arrive while the
checkpoint is being written.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from lyra.model.checkpoint import read_checkpoint
from lyra.train.interrupt import SIGNALS, stop_requests
from lyra.train.metrics_log import read_metrics

from cli_helpers import default_signal_actions, lyra_env
from train_helpers import make_data, tiny_config_dict


class Escaped(Exception):
    """Raised by the handlers a test installs before `stop_requests` (what it must restore)."""


def _escape(signum, frame):
    raise Escaped(signum)


@pytest.fixture
def outer_handlers():
    """Python handlers for SIGINT and SIGTERM that raise `Escaped`: a signal reaching them
    fails the test instead of killing the test process."""
    saved = {s: signal.signal(s, _escape) for s in SIGNALS}
    yield
    for s, old in saved.items():
        signal.signal(s, old)


def handlers() -> dict[int, object]:
    return {s: signal.getsignal(s) for s in SIGNALS}


def test_a_second_signal_while_stopping_changes_nothing_until_the_run_returns(outer_handlers):
    def run() -> int | None:
        with stop_requests() as stop:
            signal.raise_signal(signal.SIGINT)       # Ctrl-C: the step finishes, then the run stops
            assert stop.signal == signal.SIGINT
            signal.raise_signal(signal.SIGINT)       # Ctrl-C again, or torchrun's agent passing it on
            signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)          # the final save, after the loop
        signal.raise_signal(signal.SIGINT)
        return stop.signal                           # returning releases the request

    assert run() == signal.SIGINT                    # the first signal, and no Escaped
    assert handlers() == {s: _escape for s in SIGNALS}
    with pytest.raises(Escaped):
        signal.raise_signal(signal.SIGINT)


def test_without_a_stop_the_handlers_come_back_as_the_block_ends(outer_handlers):
    with stop_requests() as stop:
        assert all(h is not _escape for h in handlers().values())
    assert not stop and handlers() == {s: _escape for s in SIGNALS}
    with pytest.raises(RuntimeError), stop_requests() as stop:   # nor after an error, stop or not
        signal.raise_signal(signal.SIGTERM)
        raise RuntimeError("failed")
    assert stop.signal == signal.SIGTERM and handlers() == {s: _escape for s in SIGNALS}


def test_an_ignored_signal_stays_ignored(outer_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # nohup, or a background job without job control
    with stop_requests() as stop:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
        assert not stop
    del stop
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is _escape


HARNESS = """
    import os, sys
    from lyra.train.checkpointing import CheckpointStore

    real_save = CheckpointStore.save

    def save(self, *args, **kwargs):   # say so, then wait until the test closes its end of the FIFO
        with open(os.environ["HOLD"], "rb") as hold:   # the test holds it open: no wait here
            sys.stderr.write("harness: saving\\n")
            sys.stderr.flush()
            hold.read()                                 # ends when the test closes its end
        return real_save(self, *args, **kwargs)

    CheckpointStore.save = save
    from lyra.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def test_signals_during_the_final_save_do_not_interrupt_it(tmp_path):
    make_data(tmp_path)
    from lyra.core.toml import dumps

    config = tmp_path / "run.toml"
    config.write_text(dumps(tiny_config_dict(
        tmp_path, optim={"max_steps": 100000}, checkpoint={"save_every": 100000},
        logging={"progress": "lines", "log_every": 1, "eval_every": 100000, "val_audio": 0})))
    harness = tmp_path / "harness.py"
    harness.write_text(textwrap.dedent(HARNESS))
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    hold = os.open(fifo, os.O_RDWR)   # a writer: the harness's read waits until this closes
    proc = subprocess.Popen([sys.executable, str(harness), "train", str(config)], cwd=tmp_path,
                            env=lyra_env(HOLD=str(fifo)), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signal_actions(signal.SIGINT, signal.SIGTERM))
    seen = []
    try:
        for line in proc.stderr:       # a progress line per step
            seen.append(line)
            step = re.match(r"training (\d+)/", line)
            if step and int(step.group(1)) >= 2:
                break
        proc.send_signal(signal.SIGINT)
        for line in proc.stderr:       # the stop was noted: the loop ended and the final save began
            seen.append(line)
            if line == "harness: saving\n":
                break
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        os.close(hold)
        hold = -1
        _, rest = proc.communicate(timeout=300)   # only bounds a broken run
    finally:
        if hold >= 0:
            os.close(hold)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    err = "".join(seen) + rest
    assert "harness: saving\n" in seen, err
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "lyra: interrupted" not in err, err
    last = max(r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl"))
    assert read_checkpoint(tmp_path / "run" / "latest.pt")["train"]["step"] == last >= 2
    assert f"stopped at step {last}: saved" in err and "--resume" in err
