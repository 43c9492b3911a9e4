"""Optional extras (``plot``, ``wandb``, ``tensorboard``): whether one is installed, and how to install it.

Every message that asks for an extra says it the same way, through `install_hint`: when Lyra
runs from a source checkout installed in editable mode (``pip install -e .``), the command
names that checkout (``pip install -e '/src/lyra[wandb]'``), which works from any folder;
otherwise (a wheel) it is ``pip install 'lyra-codec[wandb]'``.

    check("matplotlib", "plot", "lyra plot")     # or a one-line LyraError saying how to install it
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from urllib.parse import unquote, urlparse

from lyra.core.errors import LyraError

DISTRIBUTION = "lyra-codec"


def installed(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check(module: str, extra: str, what: str) -> None:
    """Raise a one-line `LyraError` if `module` (of the extra `extra`) is not installed;
    `what` says what needs it (``"logging.wandb = true"``)."""
    if not installed(module):
        raise LyraError(f"{what} needs the '{module}' package: {install_hint(extra)}")


def install_hint(extra: str) -> str:
    """The pip command that installs the extra `extra` into this installation."""
    source = editable_source()
    if source is not None:
        return f"pip install -e {shlex.quote(f'{source}[{extra}]')}"
    return f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}]')}"


def editable_source() -> Path | None:
    """The source checkout Lyra is installed from in editable mode, or None (a wheel, or not
    installed at all: then the wheel's command is the one to give)."""
    from importlib import metadata

    # Every copy of the metadata on the path (run inside the checkout, its lyra_codec.egg-info
    # comes first and has no direct_url.json): the installed one says how it was installed.
    for dist in metadata.distributions(name=DISTRIBUTION):
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except (OSError, json.JSONDecodeError):
            continue
        url = info.get("url", "") if isinstance(info, dict) else ""
        if url:
            editable = info.get("dir_info", {}).get("editable") and url.startswith("file://")
            return Path(unquote(urlparse(url).path)) if editable else None
    return None
