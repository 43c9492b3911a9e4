"""Packaging: every package ships in a wheel, under names that cannot collide."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_directory_is_listed():
    tool = pyproject()["tool"]["setuptools"]
    dirs = {v: k for k, v in tool["package-dir"].items()}  # "kernels" -> "lyra_kernels"
    found = set()
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.parent.relative_to(ROOT).parts
        if rel[0] in dirs:
            found.add(".".join((dirs[rel[0]], *rel[1:])))
    assert found == set(tool["packages"]), "pyproject's [tool.setuptools] packages is out of date"
    assert "kernels" not in tool["packages"]  # a bare `kernels` collides with a PyPI package


def test_runtime_dependencies_are_the_chosen_ones():
    project = pyproject()["project"]
    names = {d.split(">")[0].split("=")[0].split(";")[0].strip() for d in project["dependencies"]}
    assert {"torch", "torchaudio", "triton", "soundfile", "einops", "typer"} <= names
    assert any(d.startswith("triton") and "Linux" in d for d in project["dependencies"])
    dev = {d.split(">")[0].strip() for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "pytest-benchmark"} <= dev
    assert project["scripts"]["lyra"] == "lyra.cli:main"
    assert project["requires-python"] == ">=3.11"
