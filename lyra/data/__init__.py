"""Latent data for generative models: pre-encoded `.lyra` folders read back as a PyTorch
dataset (`latent_dataset.LatentDataset`: fixed-length crops with padding masks, optional
normalisation, metadata), reading only the chunks a crop needs (`crops`).

May import: `lyra.core`, `lyra.audio`, `lyra.registry`, `lyra.model`, `lyra.eval`, `lyra.codec`
(the manifest, the statistics); never training or the command line. See docs/latent-datasets.md.

`from lyra.data import LatentDataset` works (loaded on first use: importing `lyra.data` loads
no torch).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "LatentDataset":
        raise AttributeError(f"module 'lyra.data' has no attribute {name!r}")
    from lyra.data.latent_dataset import LatentDataset

    return LatentDataset
