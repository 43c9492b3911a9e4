"""Checkpoints: the model config and weights (plus, for training, its state) in one file.

A checkpoint is a `torch.save`d dict of plain data and tensors only, so it loads with
``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.

    {
      "format": "lyra-checkpoint", "version": 1,
      "model_config": {...},            # ModelConfig.to_dict()
      "model": state_dict,              # the VAE's weights (fp32)
      "providers": {"activation/snake": "lyra", ...},   # which package provided each component
      "train": {...} | absent,          # training state, owned by the training engine
    }

`save_checkpoint` writes atomically; `load_model` rebuilds the model through the registry,
so a checkpoint naming a plugin's block needs that plugin installed (the error says which
package provided it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from lyra import registry
from lyra.atomic import atomic_path
from lyra.config import ModelConfig, from_dict
from lyra.errors import LyraError
from lyra.model import VAE, build_model

FORMAT = "lyra-checkpoint"
VERSION = 1
COMPONENT_KEYS = {"activation": "activation", "residual_unit": "residual_unit",
                  "encoder_block": "encoder_block", "decoder_block": "decoder_block"}


def component_providers(config: ModelConfig) -> dict[str, str]:
    """`"kind/name" -> package` for every component the config names."""
    out = {}
    for kind, key in COMPONENT_KEYS.items():
        name = getattr(config, key)
        out[f"{kind}/{name}"] = registry.component(kind, name).provider
    return out


def checkpoint_dict(model: VAE, train_state: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
        "providers": component_providers(model.config),
    }
    if train_state is not None:
        state["train"] = train_state
    return state


def save_checkpoint(path: str | Path, model: VAE, train_state: dict[str, Any] | None = None) -> None:
    """Write the checkpoint atomically (temporary file, fsync, rename)."""
    state = checkpoint_dict(model, train_state)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise LyraError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LyraError(f"{path}: not a readable Lyra checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LyraError(f"{path}: not a Lyra checkpoint")
    if state.get("version") != VERSION:
        raise LyraError(f"{path}: checkpoint version {state.get('version')} is not supported (expected {VERSION})")
    return state


def model_from_state(state: dict[str, Any], source: str = "checkpoint") -> VAE:
    """Rebuild the model a checkpoint dict describes and load its weights."""
    config = from_dict(ModelConfig, state["model_config"], f"{source}:model")
    providers = state.get("providers", {})
    for kind, key in COMPONENT_KEYS.items():
        name = getattr(config, key)
        try:
            registry.component(kind, name)
        except LyraError:
            package = providers.get(f"{kind}/{name}", "an unknown package")
            broken = [p for p in registry.failed_plugins() if p.distribution == package]
            if broken:
                raise LyraError(
                    f"{source}: the model uses {kind} '{name}' from package '{package}', which is "
                    f"installed but its {broken[0].label} failed to load: {broken[0].error}"
                ) from None
            raise LyraError(
                f"{source}: the model uses {kind} '{name}' from package '{package}', which is not "
                f"installed or not registered; install it (pip install {package}) and retry"
            ) from None
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise LyraError(f"{source}: weights do not match the model config ({str(exc).splitlines()[0]})") from None
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """The model stored in a checkpoint (from `lyra init-checkpoint` or training), in eval mode."""
    model = model_from_state(read_checkpoint(path), str(path))
    return model.to(device).eval()


def model_fingerprint(model: VAE) -> str:
    """A short hash of the model's config and weights: identifies which model wrote a latent."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(_unwrap(model).state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
