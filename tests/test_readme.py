"""Every Python block of the README runs as written (the shell blocks are the CLI's tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lyra import registry

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture
def scratch_registry():
    saved = registry.REGISTRY.snapshot()
    yield
    registry.REGISTRY.restore(saved)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, scratch_registry, one_thread):
    # Compilation is tested against eager elsewhere (tests/test_compilation.py); here the
    # compiled model's graphs run eagerly, so the block's cost is the model's, not inductor's.
    with torch.compiler.set_stance("force_eager"):
        exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), {})
