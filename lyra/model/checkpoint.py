"""Checkpoints: the model config and weights (plus, for training, its state) in one file.

A checkpoint is a `torch.save`d dict of plain data and tensors only, so it loads with
``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.

    {
      "format": "lyra-checkpoint", "version": 1,
      "model_config": {...},            # ModelConfig.to_dict()
      "model": state_dict,              # the VAE's weights (fp32)
      "providers": {"activation/snake": "lyra", ...},   # which package provided each component
      "ema": state_dict | absent,       # an exponential moving average of the weights ([ema] in training)
      "fingerprints": {"model": "1f0c...", "ema": "..."},   # `model_fingerprint` of each, so loading
                                        # needs no hashing (absent in older checkpoints: computed then)
      "checksums": {"model": "crc32:...", "ema": "..."},    # `weights_checksum` of each table, verified
                                        # on load (absent in older checkpoints: not verified then)
      "train": {...} | absent,          # training state, owned by the training engine (`lyra.train.state`)
    }

A checkpoint with "ema" weights stands for its EMA weights: `load_model` (and so `lyra
encode/decode`) and `model_from_state` (and so `lyra train --init-from`) use them, unless
asked for the raw weights with ``ema=False``. "model" always holds the weights training
continues from.

`read_checkpoint` also reads a `lyra export` file (`lyra.model.export_format`), telling the two
apart by content, and returns the checkpoint dict the export stands for (no "ema", no
"train"; "export_weights" says which weights it holds), so everything that loads a model
takes an export. Nothing in a file is trusted before it is checked (`lyra.model.stored_model`):
a checkpoint naming a plugin's block needs that plugin installed, and the error says which
package provided it; weights that differ from their stored checksum (a damaged file), or that
are not finite, are refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from lyra.core.atomic import atomic_path
from lyra.core.errors import LyraError, first_line
from lyra.model.config import ModelConfig
from lyra.model.export_format import is_safetensors, read_export
from lyra.model.stored_model import (FORMAT, VERSION, check_intact, check_loadable, check_structure, component_providers,
                                     weights_checksum)
from lyra.model.vae import VAE, build_model


def checkpoint_dict(model: VAE, train_state: dict[str, Any] | None = None,
                    ema: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    state = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
        "providers": component_providers(model.config),
    }
    if ema is not None:
        state["ema"] = {k: v.detach().cpu() for k, v in ema.items()}
    state["fingerprints"] = stored_fingerprints(model.config, state["model"], state.get("ema"))
    state["checksums"] = {which: weights_checksum(state[which]) for which in ("model", "ema") if which in state}
    if train_state is not None:
        state["train"] = train_state
    return state


def save_checkpoint(path: str | Path, model: VAE, train_state: dict[str, Any] | None = None,
                    ema: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint atomically (temporary file, fsync, rename)."""
    state = checkpoint_dict(model, train_state, ema)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise LyraError(f"{path}: no such checkpoint file")
    if is_safetensors(path):   # by content: a torch zip starts with "PK"
        state = read_export(path)
        check_structure(state, str(path))
        return state
    try:   # a file object: torch.load would take a path ending in .safetensors for safetensors
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LyraError(f"{path}: not a readable Lyra checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LyraError(f"{path}: not a Lyra checkpoint")
    if state.get("version") != VERSION:
        raise LyraError(f"{path}: checkpoint version {state.get('version')} is not supported (expected {VERSION})")
    check_structure(state, str(path))
    check_intact(state, str(path))   # the weights' bytes are the ones written, and finite
    return state


def model_from_state(state: dict[str, Any], source: str = "checkpoint", ema: bool = True) -> VAE:
    """Rebuild the model a checkpoint dict describes and load its weights (checked first):
    its EMA weights if it has them (and `ema`), else its weights."""
    check_structure(state, source)
    config = check_loadable(state, source, ema)
    model = build_model(config)
    weights = state["model"]
    if ema and "ema" in state:   # the averaged weights; anything not averaged (none, today) as trained
        weights = {**weights, **state["ema"]}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise LyraError(f"{source}: weights do not match the model config ({first_line(exc)})") from None
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> VAE:
    """The model stored in a checkpoint (from `lyra init-checkpoint` or training) or an
    export (`lyra export`), in eval mode: with its EMA weights when it has them, unless `ema`
    is False."""
    model = model_from_state(read_checkpoint(path), str(path), ema=ema)
    return model.to(device).eval()


def load_model_and_fingerprint(path: str | Path, device: str | torch.device = "cpu",
                               ema: bool = True) -> tuple[VAE, str]:
    """`load_model`, and the fingerprint of the weights it loaded: the one stored in the
    checkpoint or export when it has it (saved since fingerprints were stored), else computed."""
    model, fingerprint, _ = load_for_inference(path, device, ema)
    return model, fingerprint


def load_for_inference(path: str | Path, device: str | torch.device = "cpu",
                       ema: bool = True) -> tuple[VAE, str, Any]:
    """`load_model_and_fingerprint`, and the latent statistics the file carries (its
    ``"latent_stats"`` table, unchecked: `lyra.codec.statistics` reads it), or None."""
    state = read_checkpoint(path)
    model = model_from_state(state, str(path), ema=ema).to(device).eval()
    which = "ema" if ema and "ema" in state else "model"
    stored = state.get("fingerprints")
    fingerprint = stored.get(which) if isinstance(stored, dict) else None
    if not isinstance(fingerprint, str):
        fingerprint = model_fingerprint(model)
    return model, fingerprint, state.get("latent_stats")


def stored_fingerprints(config: ModelConfig, weights: dict[str, torch.Tensor],
                        ema: dict[str, torch.Tensor] | None = None) -> dict[str, str]:
    """What a checkpoint stores so loading needs no hashing: the fingerprint of its weights
    (``model``) and, with EMA weights, of the model that loads them (``ema``)."""
    out = {"model": weights_fingerprint(config, weights)}
    if ema is not None:
        out["ema"] = weights_fingerprint(config, {**weights, **ema})
    return out


def model_fingerprint(model: VAE) -> str:
    """A short hash of the model's config and weights: identifies which model wrote a latent."""
    return weights_fingerprint(model.config, _unwrap(model).state_dict())


def weights_fingerprint(config: ModelConfig, weights: dict[str, torch.Tensor]) -> str:
    """`model_fingerprint` of the model `config` builds holding `weights` (a state dict)."""
    h = hashlib.sha256()
    h.update(json.dumps(fingerprint_config(config), sort_keys=True).encode())
    for name, tensor in sorted(weights.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# Model options added after the first release, hashed only when set to something else than
# their default, so models written before they existed keep their fingerprints (and the
# .lyra files those models wrote still decode).
LATER_OPTIONS = ("posterior", "decoder_in_kernel", "decoder_out_bias", "final_tanh", "options", "bottleneck",
                 "decoder_base_channels")


def fingerprint_config(config: ModelConfig) -> dict[str, Any]:
    """The config as `model_fingerprint` hashes it (see `LATER_OPTIONS`)."""
    default = ModelConfig()
    return {key: value for key, value in config.to_dict().items()
            if key not in LATER_OPTIONS or value != getattr(default, key)}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
