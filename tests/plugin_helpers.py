"""Installed-looking plugin distributions for tests, and a registry reset between tests.

`write_distribution` makes what `pip install` leaves behind that `importlib.metadata` reads: a
``<name>-<version>.dist-info/`` folder with ``METADATA`` and ``entry_points.txt`` (plus any
source modules) in a folder that goes on `sys.path`. Fast, and nothing is installed into the
environment. `example_distribution` does that for `examples/lyra-plugin-example`, reading the
name, version and entry points from its own `pyproject.toml`.
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from lyra import registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lyra-plugin-example"


def write_distribution(root: Path, name: str, version: str, entry_points: dict[str, str],
                       modules: dict[str, str] | None = None) -> Path:
    """A distribution `name` declaring `entry_points` (entry-point name -> "module:attr") in
    the `lyra.plugins` group, with `modules` (file name -> source) beside it. Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{registry.ENTRY_POINT_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for filename, source in (modules or {}).items():
        (root / filename).write_text(textwrap.dedent(source))
    return root


def example_project() -> dict:
    return tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]


def example_distribution(root: Path) -> Path:
    """The example plugin's metadata, as its pyproject.toml declares it (source stays in place)."""
    project = example_project()
    return write_distribution(root, project["name"], project["version"],
                              project["entry-points"][registry.ENTRY_POINT_GROUP])


def builtins_only() -> None:
    """The registry as a fresh process has it: built-ins registered, no plugin discovered yet."""
    saved = registry.REGISTRY.snapshot()
    kept = {kind: {name: c for name, c in entries.items() if c.plugin is None}
            for kind, entries in saved.components.items()}
    registry.REGISTRY.restore(registry.Registry(kept, builtins_loaded=True))


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Each test starts from the built-ins with plugins not yet discovered, and leaves no trace."""
    monkeypatch.delenv(registry.AUTOLOAD_ENV, raising=False)
    saved = registry.REGISTRY.snapshot()
    builtins_only()
    yield registry.REGISTRY
    registry.REGISTRY.restore(saved)


@pytest.fixture
def example_plugin(tmp_path, monkeypatch):
    """The example plugin 'installed': its metadata and its source on sys.path."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.syspath_prepend(str(example_distribution(tmp_path / "site")))
    return example_project()
