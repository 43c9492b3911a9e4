"""Lyra: a VAE neural audio codec toolkit.

Importing `lyra` has no side effects: it loads no plugins, compiles nothing, touches no
device and reads no files. It does not even import torch: the names below are loaded on
first use (PEP 562), so that ``lyra --help`` and other commands that need no model start
quickly.

    import lyra
    model = lyra.build_model()                 # the default 255,858,050-parameter model
    mean, logvar = model.encode(x)             # [B, 2, T] -> 2 x [B, 64, ceil(T/2048)]
    audio = model.decode(model.sample(mean, logvar), T)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lyra.core.version import __version__  # a plain string: no torch

# name -> (module, attribute in it; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "Codec": ("lyra.codec.codec", "Codec"),
    "LyraError": ("lyra.core.errors", "LyraError"),
    "ModelConfig": ("lyra.model.config", "ModelConfig"),
    "VAE": ("lyra.model.vae", "VAE"),
    "build_model": ("lyra.model.vae", "build_model"),
    "registry": ("lyra.registry", None),
    "snake": ("lyra.model.snake", "snake"),
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:   # for type checkers and editors; never executed
    from lyra import registry
    from lyra.codec.codec import Codec
    from lyra.model.config import ModelConfig
    from lyra.core.errors import LyraError
    from lyra.model.vae import VAE, build_model
    from lyra.model.snake import snake


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lyra' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value          # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names, loaded or not, and the module's dunders."""
    return sorted({*__all__, "__version__", *(name for name in globals() if name.startswith("__"))})
