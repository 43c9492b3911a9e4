"""Lyra's version: the installed distribution's, or the source tree's when not installed."""

from __future__ import annotations

__version__ = "0.1.0"


def version() -> str:
    """The version `lyra --version` prints and exports record."""
    from importlib import metadata

    try:
        return metadata.version("lyra-codec")
    except metadata.PackageNotFoundError:   # run from a source tree that is not installed
        return __version__
