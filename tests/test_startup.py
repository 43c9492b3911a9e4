"""`lyra` starts quickly: help, --version, usage errors and commands that need no model import
neither torch nor the other heavy libraries, and `import lyra` loads its names on first use.

Start-up is checked by what got imported (``PYTHONPROFILEIMPORTTIME=1``, the environment form
of ``python -X importtime``, run through the installed entry point), never by a clock.
"""

from __future__ import annotations

import json
import subprocess
import sys

import typer.main

from cli_helpers import lyra_env, lyra_many
from lyra.cli import app

HEAVY = {"torch", "torchaudio", "triton", "numpy", "soundfile", "einops", "matplotlib", "lyra_kernels"}


def every_command(command=None, path=()) -> list[tuple[str, ...]]:
    """Every command's path (``("config", "init")``), as the app has them now."""
    command = command or typer.main.get_command(app)
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [path]
    return [p for name, sub in subcommands.items() for p in every_command(sub, (*path, name))]


def imported(stderr: str) -> set[str]:
    """The modules an ``-X importtime`` report on `stderr` lists: those an import statement
    loaded (not those `importlib.import_module` loaded, such as `lyra`'s lazy names; what
    they import with a statement, torch for one, is listed)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_help_version_and_usage_errors_import_no_heavy_library(tmp_path):
    commands = [[], ["--help"], ["--version"], ["frobnicate"], ["encode", "song.wav"], ["config", "init"],
                *([*path, "--help"] for path in every_command())]
    assert ["encode", "--help"] in commands and ["train", "--help"] in commands and len(commands) > 15
    done = lyra_many(commands, cwd=tmp_path, env=lyra_env(PYTHONPROFILEIMPORTTIME="1"))
    for args, result in zip(commands, done):
        modules = imported(result.stderr)
        assert "lyra.cli" in modules, (args, result.stderr[-2000:])      # the report is there
        assert result.returncode == (2 if args in ([], ["frobnicate"], ["encode", "song.wav"]) else 0), args
        assert {m.split(".")[0] for m in modules} & HEAVY == set(), (args, sorted(m for m in modules if m.split(".")[0] in HEAVY)[:5])
    by_args = dict(zip(map(tuple, commands), done))
    assert by_args[("--version",)].stdout.startswith(b"lyra ")
    assert b"[model]" in by_args[("config", "init")].stdout                 # it did its work


def test_python_m_lyra_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "lyra", "--version"], capture_output=True, text=True,
                          env=lyra_env(), timeout=600)
    assert done.returncode == 0 and done.stdout.startswith("lyra "), done.stderr


def test_import_lyra_is_lazy_and_its_names_load_on_first_use():
    code = (
        "import json, sys\n"
        "import lyra\n"
        "out = {'after_import': sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy'))}\n"
        "out['dir'] = dir(lyra)\n"
        "out['all'] = lyra.__all__\n"
        "out['error'] = lyra.LyraError.__module__\n"
        "out['torch_after_error'] = 'torch' in sys.modules\n"
        "model = lyra.build_model(lyra.ModelConfig.small())\n"      # imports lyra.snake, the submodule
        "out['model'] = type(model) is lyra.VAE and lyra.registry.__name__ == 'lyra.registry'\n"
        "out['codec'] = f'{lyra.Codec.__module__}.{lyra.Codec.__name__}'\n"
        "import torch\n"
        "out['snake'] = tuple(lyra.snake(torch.zeros(1, 2, 3), torch.zeros(2), torch.zeros(2)).shape)\n"
        "try:\n"
        "    lyra.no_such_name\n"
        "except AttributeError as exc:\n"
        "    out['missing'] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=lyra_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["after_import"] == [] and out["torch_after_error"] is False
    assert out["error"] == "lyra.core.errors"
    assert set(out["all"]) == {"Codec", "LyraError", "ModelConfig", "VAE", "build_model", "registry", "snake"}
    assert set(out["all"]) | {"__version__"} <= set(out["dir"])
    assert out["model"] is True and out["codec"] == "lyra.codec.codec.Codec"
    assert out["snake"] == [1, 2, 3]                 # still the function after `lyra.snake` the module loaded
    assert out["missing"] == "module 'lyra' has no attribute 'no_such_name'"
