"""The model: its config, Snake, the built-in blocks, the VAE and `build_model`, compilation,
the discriminators, and models as files (checkpoints, exports, importers).

May import: `lyra.core`, `lyra.registry`, `lyra_kernels`; never audio files, the codec,
training or the command line. See docs/architecture.md.

`from lyra.model import build_model, VAE, ModelConfig` works and stays cheap: those names are
loaded on first use, so importing `lyra.model.config` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"VAE": "lyra.model.vae", "build_model": "lyra.model.vae", "ModelConfig": "lyra.model.config"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lyra.model' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
