"""The one progress display (`lyra.core.progress`): drawn on a terminal within its width, absent
when the output is piped, silenced by --quiet; and as `lyra train` and `lyra encode DIR OUT`
show it, run on a pseudo-terminal (`run_on_pty`) and piped.

Piped runs are in process (`main`, standard error captured: not a terminal), which spares a
torch import each. Nothing here waits on time: a command's output is read until the terminal reports EOF (the
process ended), and what rich drew last stays in that output (the bar is redrawn once more
when it stops)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess

import pytest

from cli_helpers import (ANSI_ESCAPE, lyra_executable, open_terminal, read_terminal, run_on_pty, screen_lines,
                         small_checkpoint, terminal_env, write_wav)
from lyra.cli import main
from lyra.core.progress import Progress, draws
from lyra.core.toml import dumps
from train_helpers import make_data, tiny_config_dict

SHOW_CURSOR, HIDE_CURSOR = "\x1b[?25h", "\x1b[?25l"


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (rich then draws on it)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def plain_env(monkeypatch):
    """No variable that forces or stops rich's terminal handling (CI may set FORCE_COLOR)."""
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


@pytest.fixture
def columns(monkeypatch, plain_env):
    """A fake terminal's width is COLUMNS (it has no window)."""

    def set_width(width: int) -> int:
        monkeypatch.setenv("COLUMNS", str(width))
        return width

    return set_width


def test_on_a_terminal_the_bar_is_drawn_within_its_width_and_the_cursor_shown_again(columns):
    for width in (40, 100, 160):
        columns(width)
        stream = FakeTerminal()
        with Progress("encoding a-rather-long-file-name.wav", total=10.0, unit="files", stream=stream) as bar:
            assert bar.enabled
            for _ in range(4):
                bar.advance(1)
            bar.log("a line of its own")
            bar.update(loss=2.5, note="3 left")
        out = stream.getvalue()
        lines = [line for line in screen_lines(out) if line.strip()]
        assert "a line of its own" in lines
        last = lines[-1]                                  # the bar as it stopped
        assert "4/10 files" in last, last                # a narrow terminal cuts what does not fit
        if width >= 100:
            assert " files/s  " in last and " elapsed, ETA " in last, last
        if width == 160:
            assert last.endswith("  loss 2.5 3 left"), last
        assert max(map(len, lines)) <= width, lines
        assert out.rindex(SHOW_CURSOR) > out.rindex(HIDE_CURSOR)


def test_seconds_of_audio_read_as_durations_and_real_time(columns):
    columns(120)
    stream = FakeTerminal()
    with Progress("encoding song.wav", total=75.0, unit="s", stream=stream) as bar:
        bar.advance(30.0)
        bar.advance(45.0)
    last = [line for line in screen_lines(stream.getvalue()) if line.strip()][-1]
    assert "1:15/1:15" in last and "x real-time" in last and "done" in last, last


def test_an_unknown_total_shows_the_amount_and_time_elapsed(columns):
    columns(100)
    stream = FakeTerminal()
    with Progress("decoding", unit="s", stream=stream) as bar:
        bar.advance(12.5)
    last = [line for line in screen_lines(stream.getvalue()) if line.strip()][-1]
    assert "12.5 s " in last and "elapsed" in last and "ETA" not in last and "/" not in last.split("elapsed")[0], last


def test_an_exception_stops_the_bar_and_shows_the_cursor(columns):
    columns(80)
    stream = FakeTerminal()
    with pytest.raises(KeyboardInterrupt):
        with Progress("training", total=100, unit="steps", stream=stream) as bar:
            bar.advance(3)
            raise KeyboardInterrupt
    out = stream.getvalue()
    assert out.rindex(SHOW_CURSOR) > out.rindex(HIDE_CURSOR)
    assert re.search(r" 3/100 steps .* elapsed, ETA \?\n$", ANSI_ESCAPE.sub("", out)), out   # left on its own line
    bar.log("after")                                      # printed plainly: the display has stopped
    assert stream.getvalue().endswith("after\n")


def test_piped_nothing_is_drawn_but_log_lines(columns):
    stream = io.StringIO()
    assert not draws(stream=stream)
    with Progress("encoding", total=10.0, unit="s", stream=stream) as bar:
        assert not bar.enabled
        bar.advance(5.0)
        bar.log("plain line")
    assert stream.getvalue() == "plain line\n"


def test_quiet_prints_nothing_even_on_a_terminal(columns):
    columns(80)
    stream = FakeTerminal()
    assert draws(stream=stream) and not draws(quiet=True, stream=stream)
    with Progress("encoding", total=10.0, unit="s", quiet=True, stream=stream) as bar:
        assert not bar.enabled
        bar.advance(5.0)
        bar.log("not shown")
    assert stream.getvalue() == ""


def test_the_plain_line_has_the_amount_rate_eta_and_fields():
    bar = Progress("training", total=100, unit="steps", stream=io.StringIO(), rate=("audio-s/s", 2.0))
    with bar:
        for step in range(1, 21):
            bar.update(completed=step, loss=2.5, sc=0.5, kl_w=1e-4)
    line = bar.line()
    assert line.startswith("training 20/100 steps  "), line
    for part in (" audio-s/s  ", " elapsed, ETA ", "  loss 2.5 sc 0.5 kl_w 0.0001"):
        assert part in line, (part, line)


# ---------------------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------------------
def _training_config(tmp_path, **tables) -> str:
    make_data(tmp_path, train_files=2, val_files=1, seconds=0.2)
    config = tmp_path / "run.toml"
    config.write_text(dumps(tiny_config_dict(tmp_path, **tables)))
    return str(config)


def piped(capsys, *args: object) -> tuple[int, str]:
    """`lyra ARGS...` in process, standard error captured (not a terminal): status, stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_lyra_train_draws_a_bar_on_a_terminal_and_plain_lines_when_piped(tmp_path, capsys, plain_env):
    config = _training_config(tmp_path, optim={"max_steps": 3}, logging={"progress": "auto", "log_every": 2,
                                                                        "eval_every": 3})
    code, said = run_on_pty(["train", config, "--set", f"run_dir='{tmp_path / 'tty'}'"], cwd=tmp_path, columns=90)
    assert code == 0, said
    lines = screen_lines(said)
    bars = [line for line in lines if re.match("training [━╸╺]", line)]
    assert bars and max(map(len, bars)) <= 90, bars                  # (a log line may be longer: it wraps)
    assert "3/3 steps" in bars[-1] and "audio-s/s" in bars[-1] and "elapsed" in bars[-1], bars
    assert "\x1b[" in said                                           # drawn, in place
    assert any("1 validation file;" in line for line in lines), lines   # the start line, singular
    assert any(line.startswith("step 3: validation loss") for line in lines), lines
    assert any(line.startswith("done: 3 steps") for line in lines), lines

    code, err = piped(capsys, "train", config, "--set", f"run_dir='{tmp_path / 'piped'}'")
    assert code == 0, err
    assert not ANSI_ESCAPE.search(err) and "\r" not in err
    plain = [line for line in err.splitlines() if line.startswith("training ")]
    assert [line.split()[1] for line in plain] == ["2/3", "3/3"], err     # every log_every steps, and the last
    assert all("loss " in line and " kl_w " in line and "audio-s/s" in line for line in plain), plain


def test_lyra_train_quiet_prints_nothing_but_errors(tmp_path, capsys, plain_env):
    config = _training_config(tmp_path, optim={"max_steps": 1}, logging={"progress": "auto", "eval_every": 1})
    code, said = run_on_pty(["train", config, "--quiet"], cwd=tmp_path)
    assert code == 0 and said == "", said
    assert (tmp_path / "run" / "latest.pt").is_file()
    code, err = piped(capsys, "train", config, "-q", "--set", f"data.train_dir='{tmp_path / 'missing'}'")
    assert code == 1 and err.startswith("lyra: error: ") and len(err.splitlines()) == 1, err


def test_lyra_encode_folder_shows_progress_on_a_terminal_only(tmp_path, capsys, monkeypatch, plain_env):
    ckpt = small_checkpoint(tmp_path / "small.pt")
    (tmp_path / "music").mkdir()
    for name in ("a", "b"):
        write_wav(tmp_path / "music" / f"{name}.wav", 4000)
    code, said = run_on_pty(["encode", "music", "tty", "-c", ckpt, "--threads", "1"], cwd=tmp_path, columns=80)
    assert code == 0, said
    lines = [line for line in screen_lines(said) if line.strip()]
    bars = [line for line in lines if re.match("encoding [━╸╺]", line)]   # (not "encoding 2 files (...)")
    assert bars and max(map(len, bars)) <= 80 and "2/2 files" in bars[-1], lines
    assert "\x1b[" in said

    monkeypatch.chdir(tmp_path)
    code, err = piped(capsys, "encode", "music", "piped", "-c", ckpt, "--threads", "1")
    assert code == 0, err
    lines = err.splitlines()                                  # the start line and the summary only
    assert len(lines) == 2 and lines[0].startswith("encoding 2 files") and lines[1].startswith("2 files written"), err
    assert not ANSI_ESCAPE.search(err) and "\r" not in err


def test_ctrl_c_over_a_drawn_bar_prints_its_line_from_the_start_of_the_row(tmp_path):
    """`lyra encode --stream - OUT` on a terminal, its audio arriving through a pipe we hold:
    once the bar is drawn (seen on the terminal), SIGINT. The interrupted line must begin at
    the row's start, over the bar (``\\r`` + erase line), and no output file is left. The
    command is blocked reading the pipe, so nothing here depends on timing."""
    ckpt = small_checkpoint(tmp_path / "m.pt")
    wav = write_wav(tmp_path / "in.wav", 44100).read_bytes()
    master, slave = open_terminal()
    proc = subprocess.Popen([lyra_executable(), "encode", "--stream", "-", str(tmp_path / "out.lyra"), "-c", str(ckpt)],
                            stdin=subprocess.PIPE, stdout=slave, stderr=slave, env=terminal_env(), start_new_session=True)
    os.close(slave)
    proc.stdin.write(wav[:len(wav) // 2])            # a header promising 1 s, and half of it
    proc.stdin.flush()

    def interrupt_once_drawn(output: bytes) -> None:
        if b"encoding" in output and proc.returncode is None and not interrupted:
            proc.send_signal(signal.SIGINT)
            interrupted.append(True)

    interrupted: list[bool] = []
    try:
        text = read_terminal(master, interrupt_once_drawn)
    finally:
        proc.stdin.close()
    assert interrupted and proc.wait() == 128 + signal.SIGINT
    assert "\r\x1b[Klyra: interrupted (SIGINT)" in text, repr(text[-300:])
    assert {p.name for p in tmp_path.iterdir()} == {"m.pt", "in.wav"}     # no output, no temporary
