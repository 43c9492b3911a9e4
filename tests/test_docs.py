"""The documentation stays true: every Python block of README.md and docs/*.md runs as written
(the shell blocks are the CLI's tests), and every relative link in README.md, BENCHMARKS.md,
docs/*.md and the example plugin's README resolves (a file that exists; an ``#anchor`` a
heading of that page, as GitHub spells it)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

from lyra import registry

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md")),
          ROOT / "examples" / "lyra-plugin-example" / "README.md"]

FENCE = re.compile(r"^( *)(```|~~~)(.*?)\n(.*?)^\1\2 *$", re.M | re.S)


def python_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, dedented (a block may sit in a list item)."""
    return [textwrap.dedent(body) for _, _, info, body in FENCE.findall(page.read_text())
            if info.strip() == "python"]


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else str(page)


BLOCKS = [(name(page), i + 1, code) for page in PAGES for i, code in enumerate(python_blocks(page))]


@pytest.fixture
def scratch_registry():
    saved = registry.REGISTRY.snapshot()
    yield
    registry.REGISTRY.restore(saved)


def test_the_readme_has_python_blocks():
    assert len(python_blocks(README)) >= 2


@pytest.mark.parametrize("page, number, code", BLOCKS, ids=[f"{page}-block{n}" for page, n, _ in BLOCKS])
def test_python_block_runs(page, number, code, scratch_registry, one_thread):
    # Compilation is tested against eager elsewhere (tests/test_compilation.py); here the
    # compiled model's graphs run eagerly, so the block's cost is the model's, not inductor's.
    with torch.compiler.set_stance("force_eager"):
        exec(compile(code, f"{page} python block {number}", "exec"), {})


# -- links --------------------------------------------------------------------------------
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def prose(text: str) -> str:
    """`text` without fenced code blocks (links and headings there are not links and headings)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-cased, without punctuation, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), heading)   # `code` -> code
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)       # [text](link) -> text
    text = re.sub(r"<[^>]+>|\*", "", text)                       # HTML tags, emphasis
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, heading in HEADING.findall(prose(page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(page.read_text()))
    return LINK.findall(text) + REFERENCE.findall(text)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):     # https:, mailto:: not checked here
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif page.is_relative_to(ROOT) and not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {name(dest)}")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    return broken


def test_slugs_are_githubs():
    assert slug("What `--resume` checks") == "what---resume-checks"
    assert slug("Stable Audio Open's VAE: stable-audio-tools vs Lyra (`tools/sat_bench.py`)") == \
        "stable-audio-opens-vae-stable-audio-tools-vs-lyra-toolssat_benchpy"
    assert slug("The codec: `lyra.Codec`") == "the-codec-lyracodec"


def test_the_pages_have_links():
    assert len(links(README)) >= 10
    assert "docs/architecture.md" in links(README) and "docs/modules.md" in links(README)


@pytest.mark.parametrize("page", LINKED, ids=[name(page) for page in LINKED])
def test_relative_links_resolve(page):
    assert page.exists(), f"{name(page)} is missing"
    assert broken_links(page) == []
