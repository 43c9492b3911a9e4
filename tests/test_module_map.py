"""docs/modules.md matches the code: every module is listed once, and every import runs the
way the map says (to the importer's own layer or a lower one, lazy imports included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "modules.md"


def layers() -> dict[str, int]:
    """{module: layer number} from the map's ``## N. ...`` sections and their tables."""
    out: dict[str, int] = {}
    layer = 0
    for line in MAP.read_text().splitlines():
        if heading := re.match(r"## (\d+)\. ", line):
            layer = int(heading.group(1))
        elif row := re.match(r"\| `([\w.]+)` \|", line):
            assert row.group(1) not in out, f"{row.group(1)} is listed twice"
            out[row.group(1)] = layer
    return out


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in (("lyra", ROOT / "lyra"), ("lyra_kernels", ROOT / "kernels")):
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """The Lyra modules `path` imports, anywhere in the file (``from lyra import x`` counts as
    ``lyra.x`` when x is a module, else as ``lyra``)."""
    names = set(modules())
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in ("lyra", "lyra_kernels")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in ("lyra", "lyra_kernels"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in names else node.module)
    return out


def test_every_module_is_on_the_map_once_and_the_map_names_no_other():
    listed, present = layers(), modules()
    assert sorted(set(present) - set(listed)) == [], "modules missing from docs/modules.md"
    assert sorted(set(listed) - set(present)) == [], "docs/modules.md lists modules that do not exist"


def wrong_way(files: dict[str, Path]) -> list[str]:
    listed = layers()
    return [f"{module} (layer {listed[module]}) imports {target} (layer {listed[target]})"
            for module, path in sorted(files.items())
            for target in sorted(imports(path))
            if target != module and listed[target] > listed[module]]


def test_imports_run_down_the_layers():
    assert wrong_way(modules()) == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    """Not vacuous: audio importing the model, even inside a function, is caught."""
    fake = tmp_path / "overlap.py"
    fake.write_text((ROOT / "lyra" / "audio" / "overlap.py").read_text() + "\n\ndef f():\n    from lyra.model.vae import VAE\n")
    listed = layers()
    assert wrong_way({"lyra.audio.overlap": fake}) == [
        f"lyra.audio.overlap (layer {listed['lyra.audio.overlap']}) imports lyra.model.vae (layer {listed['lyra.model.vae']})"]


def cycles(files: dict[str, Path]) -> list[list[str]]:
    """The import cycles among `files` (lazy imports included): each strongly connected group
    of modules that import one another, directly or through others (Tarjan's algorithm)."""
    graph = {module: sorted(t for t in imports(path) if t in files and t != module) for module, path in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles():
    assert cycles(modules()) == []


def test_the_cycle_check_sees_a_cycle(tmp_path):
    """Not vacuous: the container importing back (lazily) a module that imports it is a cycle."""
    files = dict(modules())
    user = next(m for m, path in sorted(files.items()) if "lyra.audio.container" in imports(path))
    fake = tmp_path / "container.py"
    fake.write_text(files["lyra.audio.container"].read_text() + f"\n\ndef f():\n    import {user}\n")
    files["lyra.audio.container"] = fake
    assert any({"lyra.audio.container", user} <= set(group) for group in cycles(files))


def test_every_package_says_what_it_owns_and_may_import():
    for package in sorted((ROOT / "lyra").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(package.read_text())) or ""
        assert doc, f"{package.relative_to(ROOT)} has no docstring"
        if package.parent.parent == ROOT / "lyra":    # the top-level sub-packages
            assert "May import" in doc, f"{package.relative_to(ROOT)}: its docstring must say what it may import"


def test_no_module_is_a_hub():
    """One concept per module: none grows past about 450 lines."""
    sizes = {module: len(path.read_text().splitlines()) for module, path in modules().items()}
    assert {m: n for m, n in sizes.items() if n > 480} == {}
