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
      "train": {...} | absent,          # training state, owned by the training engine
    }

A checkpoint with "ema" weights stands for its EMA weights: `load_model` (and so `lyra
encode/decode`) and `model_from_state` (and so `lyra train --init-from`) use them, unless
asked for the raw weights with ``ema=False``. "model" always holds the weights training
continues from.

A model exported with `lyra export` (`lyra.export`: a weights-only safetensors file) is read
here too: `read_checkpoint` tells the two apart by content and returns the checkpoint dict the
export stands for (no "ema", no "train"; "export_weights" says which weights it holds), so
everything that loads a model from a checkpoint takes an export, and ``--resume`` refuses one.

`save_checkpoint` writes atomically; `load_model` rebuilds the model through the registry,
so a checkpoint naming a plugin's block needs that plugin installed (the error says which
package provided it).

A checkpoint file is input like any other: nothing in it is trusted before it is checked.
`read_checkpoint` checks its structure (keys and types); `model_from_state` builds the model
its config describes on the ``meta`` device (no memory), compares every expected weight name
and shape with the stored tensors, and only then builds it for real, so a 1 KB file whose
config claims a 100 GB model is refused before anything is allocated. `check_train_state` and
`check_optimizer_state` do the same for what ``lyra train --resume`` reads. Each problem is a
one-line `LyraError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

import torch

from lyra import registry
from lyra.atomic import atomic_path
from lyra.config import ModelConfig, from_dict
from lyra.errors import LyraError, first_line
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
    from lyra import export   # imports this module

    if export.is_safetensors(path):   # by content: a torch zip starts with "PK"
        state = export.read_export(path)
        _check_structure(state, str(path))
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
    _check_structure(state, str(path))
    return state


def _check_structure(state: dict[str, Any], source: str) -> None:
    """The keys `read_checkpoint` promises, with the types their readers assume."""
    for key in ("model_config", "model"):
        if key not in state:
            raise LyraError(f"{source}: incomplete Lyra checkpoint (it has no '{key}')")
    if not isinstance(state["model_config"], dict):
        raise LyraError(f"{source}: 'model_config' must be a table, got {_kind(state['model_config'])}")
    weights = state["model"]
    if not isinstance(weights, dict):
        raise LyraError(f"{source}: 'model' must be a table of named tensors, got {_kind(weights)}")
    for name, tensor in weights.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise LyraError(f"{source}: 'model' must map weight names to tensors; {name!r} is {_kind(tensor)}")
        if tensor.layout != torch.strided or not tensor.is_floating_point():
            raise LyraError(f"{source}: weight {name} is a {tensor.dtype} {tensor.layout} tensor, not dense floating point")
    if "ema" in state:
        ema = state["ema"]
        if not isinstance(ema, dict):
            raise LyraError(f"{source}: 'ema' must be a table of named tensors, got {_kind(ema)}")
        for name, tensor in ema.items():
            if name not in weights or not isinstance(tensor, torch.Tensor):
                raise LyraError(f"{source}: 'ema' must hold the model's weights; {name!r} is "
                                f"{'not a model weight' if name not in weights else _kind(tensor)}")
            if tensor.shape != weights[name].shape or not tensor.is_floating_point() or tensor.layout != torch.strided:
                raise LyraError(f"{source}: EMA weight {name} is a {tensor.dtype} tensor of shape {list(tensor.shape)}, "
                                f"the weight it averages {list(weights[name].shape)}")
    providers = state.get("providers", {})
    if not isinstance(providers, dict) or not all(isinstance(v, str) for v in providers.values()):
        raise LyraError(f"{source}: 'providers' must be a table of package names")
    fingerprints = state.get("fingerprints", {})
    if not isinstance(fingerprints, dict) or not all(
            is_fingerprint(v) for v in fingerprints.values()):
        raise LyraError(f"{source}: 'fingerprints' must be a table of 16-digit hexadecimal strings")
    if "train" in state and not isinstance(state["train"], dict):
        raise LyraError(f"{source}: 'train' must be a table, got {_kind(state['train'])}")


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "a tensor"
    return {dict: "a table", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def model_from_state(state: dict[str, Any], source: str = "checkpoint", ema: bool = True) -> VAE:
    """Rebuild the model a checkpoint dict describes and load its weights (checked first):
    its EMA weights if it has them (and `ema`), else its weights."""
    _check_structure(state, source)
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


def check_loadable(state: dict[str, Any], source: str, ema: bool = True) -> ModelConfig:
    """The checks `model_from_state` makes before it builds anything (the config, its
    components installed, the weights asked for present, every weight's name and shape);
    the config. `lyra export` makes them too: it only writes a model that loads."""
    config = from_dict(ModelConfig, state["model_config"], f"{source}:model")
    check_components_installed(config, state.get("providers", {}), source)
    check_ema_choice(state, source, ema)
    check_weights(config, state["model"], source)
    return config


def is_fingerprint(value: Any) -> bool:
    """Whether `value` is a model fingerprint as `model_fingerprint` writes it: 16 hex digits."""
    return isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def check_ema_choice(state: dict[str, Any], source: str, ema: bool) -> None:
    """Raw weights (``ema=False``) cannot come from an export that holds only EMA weights."""
    if not ema and state.get("export_weights") == "ema":
        raise LyraError(f"{source}: is an export of EMA weights; the raw trained weights are not in it "
                        f"(export them with `lyra export --no-ema`, or load the training checkpoint)")


def check_components_installed(config: ModelConfig, providers: dict[str, str], source: str) -> None:
    """Every component the config names is registered; else which package to install (or
    whose plugin failed to load), from the checkpoint's providers."""
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
            if registry.autoload_disabled():
                raise LyraError(
                    f"{source}: the model uses {kind} '{name}' from package '{package}', which is not "
                    f"registered: plugin autoloading is off ({registry.AUTOLOAD_ENV}=1); unset it to load "
                    f"installed plugins (and pip install {package} if it is not installed)"
                ) from None
            raise LyraError(
                f"{source}: the model uses {kind} '{name}' from package '{package}', which is not "
                f"installed or not registered; install it (pip install {package}) and retry"
            ) from None


def check_weights(config: ModelConfig, weights: dict[str, torch.Tensor], source: str) -> None:
    """Every weight the config implies is stored, with its shape, and nothing else is.

    The model is built on the ``meta`` device, which allocates nothing, so a config that
    claims a huge model costs nothing to check. (A component must therefore be buildable on
    ``meta``: create tensors through torch's factories, without a fixed device.)
    """
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except LyraError:
        raise
    except Exception as exc:
        raise LyraError(f"{source}: its model config does not build a model ({first_line(exc)})") from None
    missing = [k for k in expected if k not in weights]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LyraError(f"{source}: weights do not match the model config (no {missing[0]}{more}; "
                        f"the config describes {_count(expected)} parameters)")
    extra = [k for k in weights if k not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise LyraError(f"{source}: weights do not match the model config (unexpected {extra[0]}{more})")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise LyraError(f"{source}: weights do not match the model config ({key} is {list(weights[key].shape)} "
                            f"in the file, the config implies {list(shape)})")


def _count(shapes: dict[str, tuple[int, ...]]) -> str:
    return f"{sum(math.prod(s) for s in shapes.values()):,}"


# ---------------------------------------------------------------------------------------
# What `lyra train --resume` reads
# ---------------------------------------------------------------------------------------
_TRAIN_INTS = ("step", "batches", "nonfinite_run", "world_size")
_TRAIN_NUMBERS = ("best_val", "audio_seconds")


def check_train_state(state: dict[str, Any], source: str | Path) -> None:
    """A checkpoint (from `read_checkpoint`) that a run can resume from: its weights fit its
    config and its "train" table has every key the engine restores, with sound types."""
    source = str(source)
    if "export_weights" in state:
        raise LyraError(f"{source}: is an exported model (`lyra export`: weights only), with no training state "
                        f"to resume from; start a new run from it with --init-from")
    if "train" not in state:
        raise LyraError(f"{source}: has no training state to resume from")
    config = from_dict(ModelConfig, state["model_config"], f"{source}:model")
    check_weights(config, state["model"], source)
    train = state["train"]
    for key in (*_TRAIN_INTS, *_TRAIN_NUMBERS, "optimizer", "rng"):
        if key not in train:
            raise LyraError(f"{source}: training state has no '{key}'; it cannot be resumed")
    for key in _TRAIN_INTS:
        value = train[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "world_size" else 0):
            raise LyraError(f"{source}: training state '{key}' must be a non-negative integer, got {value!r}")
    for key in _TRAIN_NUMBERS:
        if isinstance(train[key], bool) or not isinstance(train[key], (int, float)):
            raise LyraError(f"{source}: training state '{key}' must be a number, got {_kind(train[key])}")
    optimizer = train["optimizer"]
    if (not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict)
            or not isinstance(optimizer.get("param_groups"), list)):
        raise LyraError(f"{source}: training state 'optimizer' is not an optimizer's state (state, param_groups)")
    if not isinstance(train.get("scaler", {}), dict):
        raise LyraError(f"{source}: training state 'scaler' must be a table, got {_kind(train['scaler'])}")
    _check_rng(train["rng"], source)
    # Added with adversarial training and EMA; absent from older checkpoints.
    if not isinstance(train.get("best_metric", ""), str):
        raise LyraError(f"{source}: training state 'best_metric' must be a metric name, got {_kind(train['best_metric'])}")
    threads = train.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LyraError(f"{source}: training state 'threads' must be a positive integer, got {threads!r}")
    adversarial = train.get("adversarial")
    if adversarial is not None and (not isinstance(adversarial, dict)
                                    or not isinstance(adversarial.get("discriminators"), dict)):
        raise LyraError(f"{source}: training state 'adversarial' must be a table with the discriminators' weights")


def _check_rng(rng: Any, source: str) -> None:
    """The random-number states of `lyra.train.state.capture_rng`, sized as this process's."""
    bad = f"{source}: training state 'rng' is damaged"
    if not isinstance(rng, dict) or not all(isinstance(rng.get(k), dict) for k in ("numpy", "python")):
        raise LyraError(f"{bad} (expected torch, numpy and python states)")
    torch_state, numpy_state, python_state = rng.get("torch"), rng["numpy"], rng["python"]
    if (not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8
            or torch_state.shape != torch.get_rng_state().shape):
        raise LyraError(f"{bad} (its torch state is not a generator state)")
    keys = numpy_state.get("keys")
    if (not isinstance(keys, torch.Tensor) or keys.shape != np.random.get_state()[1].shape
            or not isinstance(numpy_state.get("kind"), str)
            or not all(isinstance(numpy_state.get(k), (int, float)) for k in ("pos", "has_gauss", "cached_gaussian"))):
        raise LyraError(f"{bad} (its numpy state is not a generator state)")
    internal = python_state.get("state")
    if (not isinstance(internal, torch.Tensor) or internal.shape != (len(random.getstate()[1]),)
            or not isinstance(python_state.get("version"), int)
            or not isinstance(python_state.get("gauss_next"), (float, type(None)))):
        raise LyraError(f"{bad} (its python state is not a generator state)")
    cuda = rng.get("cuda", [])
    if not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda):
        raise LyraError(f"{bad} (its cuda states are not generator states)")


def check_optimizer_state(saved: dict[str, Any], optimizer: torch.optim.Optimizer, source: str | Path) -> None:
    """`saved` (a checked train state's "optimizer") fits `optimizer`: the same parameter
    groups and sizes, and every per-parameter state tensor shaped like its parameter."""
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise LyraError(f"{source}: the optimizer state has {len(groups)} parameter groups, the model's optimizer "
                        f"{len(optimizer.param_groups)}")
    for i, (group, live) in enumerate(zip(groups, optimizer.param_groups)):
        ids = group.get("params") if isinstance(group, dict) else None
        if not isinstance(ids, list) or len(ids) != len(live["params"]):
            count = len(ids) if isinstance(ids, list) else "no"
            raise LyraError(f"{source}: optimizer parameter group {i} has {count} parameters, the model's has "
                            f"{len(live['params'])}")
        for index, param in zip(ids, live["params"]):
            entry = saved["state"].get(index, {})
            if not isinstance(entry, dict):
                raise LyraError(f"{source}: optimizer state of parameter {index} is {_kind(entry)}, not a table")
            for name, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise LyraError(f"{source}: optimizer state '{name}' of parameter {index} is "
                                    f"{list(value.shape)}, the parameter is {list(param.shape)}")


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
    state = read_checkpoint(path)
    model = model_from_state(state, str(path), ema=ema).to(device).eval()
    which = "ema" if ema and "ema" in state else "model"
    stored = state.get("fingerprints")
    fingerprint = stored.get(which) if isinstance(stored, dict) else None
    if not isinstance(fingerprint, str):
        fingerprint = model_fingerprint(model)
    return model, fingerprint


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
LATER_OPTIONS = ("posterior", "decoder_in_kernel", "decoder_out_bias", "final_tanh", "options")


def fingerprint_config(config: ModelConfig) -> dict[str, Any]:
    """The config as `model_fingerprint` hashes it (see `LATER_OPTIONS`)."""
    default = ModelConfig()
    return {key: value for key, value in config.to_dict().items()
            if key not in LATER_OPTIONS or value != getattr(default, key)}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
