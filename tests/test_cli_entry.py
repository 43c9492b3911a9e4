"""The first touch, through the installed `lyra` entry point in a subprocess as a user meets it:
usage errors, help, --version, an unexpected error, help text that renders right, and a
reader that closes stdout early. (A test that called the Python function would not have
caught the handler importing `click`, which typer 0.29 no longer installs.)
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cli_helpers import lyra, lyra_env, lyra_executable, lyra_many, write_wav
from lyra.cli import main

ROOT = Path(__file__).resolve().parents[1]


def assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err and 'File "' not in err, err


# The commands a user first types (most import no torch: tests/test_startup.py), in one batch.
FIRST_TOUCH = {
    "alone": [], "bogus": ["--bogus"], "frobnicate": ["frobnicate"], "missing OUT": ["encode", "song.wav"],
    "bad number": ["encode", "a.wav", "b.lyra", "-c", "m.pt", "--chunk-seconds", "abc"],
    "-h": ["-h"], "--version": ["--version"], "missing file": ["encode", "missing.wav", "x.lyra", "-c", "m.pt"],
    "init-checkpoint": ["init-checkpoint", "-h"], "model-info": ["model-info", "--help"],
    "encode": ["encode", "--help"], "eval": ["eval", "--help"],
}


@pytest.fixture(scope="module")
def first_touch(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("cwd")
    return dict(zip(FIRST_TOUCH, lyra_many(list(FIRST_TOUCH.values()), cwd=cwd)))


@pytest.mark.parametrize("case, message", [
    ("bogus", "No such option: --bogus"),
    ("frobnicate", "No such command 'frobnicate'"),
    ("missing OUT", "Missing argument 'OUT'"),
    ("bad number", "Invalid value for '--chunk-seconds'"),
])
def test_usage_errors_print_the_usage_and_exit_2(first_touch, case, message):
    done = first_touch[case]
    assert done.returncode == 2, done.stderr
    assert_no_traceback(done.stderr)
    assert done.stderr.startswith("Usage: lyra ") and f"Error: {message}" in done.stderr
    assert done.stdout == b""


def test_lyra_alone_prints_the_help_and_exits_2(first_touch):
    alone = first_touch["alone"]
    assert alone.returncode == 2                       # no command is a usage error (documented)
    assert "Usage: lyra [OPTIONS] COMMAND [ARGS]..." in alone.stderr and "encode" in alone.stderr
    assert_no_traceback(alone.stderr)


def test_h_is_help_and_version_works(first_touch, capsys):
    short = first_touch["-h"]
    assert short.returncode == 0 and b"Commands:" in short.stdout and b"-h, --help" in short.stdout
    assert main(["--help"]) == 0
    assert capsys.readouterr().out == short.stdout.decode()
    version = first_touch["--version"]
    assert version.returncode == 0
    assert version.stdout.decode() == f"lyra {importlib.metadata.version('lyra-codec')}\n"


def test_a_user_error_is_one_line_without_a_traceback(first_touch):
    done = first_touch["missing file"]
    assert done.returncode == 1
    assert done.stderr == "lyra: error: missing.wav: no such file or folder\n"


@pytest.fixture()
def injected_bug(tmp_path) -> dict[str, str]:
    """An environment in which `build_model` raises a RuntimeError (a bug, not a user error),
    injected through `sitecustomize` so the real entry point runs unchanged."""
    (tmp_path / "sitecustomize.py").write_text(
        "import lyra.model.vae\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('injected failure\\nwith a second line')\n"
        "lyra.model.vae.build_model = broken\n")
    return lyra_env(PYTHONPATH=str(tmp_path))


def test_an_unexpected_error_is_one_line_and_lyra_debug_shows_the_traceback(injected_bug):
    plain = lyra("model-info", "--small", env=injected_bug)
    debug = lyra("model-info", "--small", env={**injected_bug, "LYRA_DEBUG": "1"})
    assert plain.returncode == 1
    assert plain.stderr == ("lyra: error: unexpected RuntimeError: injected failure with a second line "
                            "(LYRA_DEBUG=1 shows the traceback)\n")
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):") and "in broken" in debug.stderr
    assert debug.stderr.splitlines()[-1] == ("lyra: error: unexpected RuntimeError: injected failure with a "
                                             "second line (the traceback is above)")


def test_lyra_imports_only_declared_packages():
    """The code imports nothing that pyproject.toml does not declare (typer's `click` was)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower()
                for d in project["dependencies"] + sum(project["optional-dependencies"].values(), [])}
    owners = importlib.metadata.packages_distributions()
    undeclared = {}
    for path in [*(ROOT / "lyra").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("lyra", "lyra_kernels"):
                    continue
                dists = {d.lower() for d in owners.get(top, [top])}
                if not dists & declared:
                    undeclared[top] = str(path.relative_to(ROOT))
    assert undeclared == {}


# ---------------------------------------------------------------------------------------
# Help renders right
# ---------------------------------------------------------------------------------------
COMMANDS = [["model-info"], ["init-checkpoint"], ["encode"], ["decode"], ["info"], ["eval"], ["plugins"],
            ["train"], ["demo"], ["config", "init"], ["config", "show"]]


def test_help_text_renders_right(first_touch, capsys):
    for name in ("init-checkpoint", "model-info"):
        assert first_touch[name].returncode == 0
        assert "TOML file with a [model] table" in first_touch[name].stdout.decode()
    assert first_touch["encode"].stdout.startswith(b"Usage: lyra encode [OPTIONS] IN OUT\n")
    assert first_touch["eval"].stdout.startswith(b"Usage: lyra eval [OPTIONS] REF [DEGRADED]\n")
    assert first_touch["init-checkpoint"].stdout.startswith(b"Usage: lyra init-checkpoint [OPTIONS] OUT\n")
    # The examples keep their lines.
    assert "\n             lyra encode music/ latents/ -c model.pt --stream\n" in first_touch["encode"].stdout.decode()
    # Every command's help (rendered by the same code in this process): flags take no value,
    # and usage lines name arguments plainly.
    for command in COMMANDS:
        assert main([*command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "<bool>" not in text, command
        usage = text.splitlines()[0]
        assert "{" not in usage and "[[" not in usage, usage


# ---------------------------------------------------------------------------------------
# A reader that closes stdout early
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("coded")
    ckpt, latents = folder / "small.pt", folder / "x.lyra"
    write_wav(folder / "x.wav", 2 * 44100)
    assert main(["init-checkpoint", str(ckpt), "--small"]) == 0
    assert main(["encode", str(folder / "x.wav"), str(latents), "-c", str(ckpt)]) == 0
    return ckpt, latents


@pytest.mark.parametrize("stream, unbuffered", [(False, False), (True, True)], ids=["offline", "stream-unbuffered"])
def test_a_closed_stdout_pipe_ends_quietly_with_141(coded, stream, unbuffered):
    """`lyra decode x.lyra - -c m.pt | head -c 1000`: 350 kB of WAV into a pipe whose reader
    leaves after 1000 bytes: exit 141 (128 + SIGPIPE, as `set -o pipefail` reports), no noise;
    also with PYTHONUNBUFFERED=1, where a write into the closed pipe is first a short one."""
    ckpt, latents = coded
    env = lyra_env(**({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    proc = subprocess.Popen([lyra_executable(), "decode", str(latents), "-", "-c", str(ckpt), "--device", "cpu",
                             *(["--stream", "--chunk-seconds", "0.5"] if stream else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = proc.stdout.read(1000)
    proc.stdout.close()                              # the reader goes away
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == 141, err
    assert head.startswith(b"RIFF") and err == ""
