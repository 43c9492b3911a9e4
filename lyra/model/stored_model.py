"""A stored model, checked before anything is built: the checkpoint dict that a checkpoint
(`lyra.model.checkpoint`) or an export (`lyra.model.export_format`) stands for.

    {"format": "lyra-checkpoint", "version": 1, "model_config": {...}, "model": state_dict,
     "providers": {...}, "ema": state_dict, "fingerprints": {...}, "train": {...}, ...}

`check_structure` checks its keys and types; `config_from_state` is the one way a
`ModelConfig` is rebuilt from a file; `check_loadable` makes every check loading makes (the
config, its components installed, the weights asked for present, every weight's name and
shape, on the ``meta`` device, building no more than the file holds), so a small file
claiming a huge model is refused before anything is allocated. `check_intact` compares the
weights with the checksum stored with them (`weights_checksum`, since checkpoints and exports
store one) and refuses non-finite weights. Each problem is a one-line `LyraError` naming the file.
"""

from __future__ import annotations

import math
import re
import threading
import zlib
from typing import Any, Callable

import torch

from lyra import registry
from lyra.core.errors import LyraError, first_line, kind_of
from lyra.core.toml import from_dict
from lyra.model.build_checks import COMPONENT_KINDS
from lyra.model.config import ModelConfig
from lyra.model.vae import build_model

FORMAT = "lyra-checkpoint"
VERSION = 1
CHECKSUM = re.compile(r"crc32:[0-9a-f]{8}")   # what `weights_checksum` writes


def component_providers(config: ModelConfig) -> dict[str, str]:
    """`"kind/name" -> package` for every component the config names."""
    out = {}
    for kind in COMPONENT_KINDS:
        name = getattr(config, kind)
        out[f"{kind}/{name}"] = registry.component(kind, name).provider
    return out


def check_structure(state: dict[str, Any], source: str) -> None:
    """The keys `read_checkpoint` promises, with the types their readers assume."""
    for key in ("model_config", "model"):
        if key not in state:
            raise LyraError(f"{source}: incomplete Lyra checkpoint (it has no '{key}')")
    if not isinstance(state["model_config"], dict):
        raise LyraError(f"{source}: 'model_config' must be a table, got {kind_of(state['model_config'])}")
    weights = state["model"]
    if not isinstance(weights, dict):
        raise LyraError(f"{source}: 'model' must be a table of named tensors, got {kind_of(weights)}")
    for name, tensor in weights.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise LyraError(f"{source}: 'model' must map weight names to tensors; {name!r} is {kind_of(tensor)}")
        if tensor.layout != torch.strided or not tensor.is_floating_point():
            raise LyraError(f"{source}: weight {name} is a {tensor.dtype} {tensor.layout} tensor, not dense floating point")
    if "ema" in state:
        ema = state["ema"]
        if not isinstance(ema, dict):
            raise LyraError(f"{source}: 'ema' must be a table of named tensors, got {kind_of(ema)}")
        for name, tensor in ema.items():
            if name not in weights or not isinstance(tensor, torch.Tensor):
                raise LyraError(f"{source}: 'ema' must hold the model's weights; {name!r} is "
                                f"{'not a model weight' if name not in weights else kind_of(tensor)}")
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
    checksums = state.get("checksums", {})   # absent from checkpoints written before they were stored
    if (not isinstance(checksums, dict) or not all(k in ("model", "ema") for k in checksums)
            or not all(is_checksum(v) for v in checksums.values())):
        raise LyraError(f"{source}: 'checksums' must be a table of 'model' and 'ema' checksums (crc32:8 hex digits)")
    if "ema" in checksums and "ema" not in state:
        raise LyraError(f"{source}: damaged checkpoint: it has the checksum of EMA weights but no EMA weights")
    if "train" in state and not isinstance(state["train"], dict):
        raise LyraError(f"{source}: 'train' must be a table, got {kind_of(state['train'])}")


def config_from_state(state: dict[str, Any], source: str = "checkpoint") -> ModelConfig:
    """The `ModelConfig` a checkpoint dict (or an export's metadata) records, checked: the one
    way a model config is rebuilt from a file."""
    where = f"{source}:model"
    try:
        return from_dict(ModelConfig, state["model_config"], where)
    except LyraError as exc:   # "SOURCE:model.KEY: ...", but "unknown key 'SOURCE:model.KEY' ...": the file first
        text = str(exc)
        if text.startswith(source):
            raise
        raise LyraError(f"{source}: " + text.replace(f"'{where}", "'model")) from None
    except RecursionError:   # a crafted file's values nested thousands deep
        raise LyraError(f"{source}: its model config is nested too deeply to be a model config") from None


def check_loadable(state: dict[str, Any], source: str, ema: bool = True) -> ModelConfig:
    """The checks `model_from_state` makes before it builds anything (the config, its
    components installed, the weights asked for present, every weight's name and shape);
    the config. `lyra export` makes them too: it only writes a model that loads."""
    config = config_from_state(state, source)
    check_components_installed(config, state.get("providers", {}), source)
    check_ema_choice(state, source, ema)
    check_weights(config, state["model"], source)
    return config


def is_fingerprint(value: Any) -> bool:
    """Whether `value` is a model fingerprint as `model_fingerprint` writes it: 16 hex digits."""
    return isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def is_checksum(value: Any) -> bool:
    """Whether `value` is a checksum as `weights_checksum` writes it: ``crc32:`` and 8 hex digits."""
    return isinstance(value, str) and CHECKSUM.fullmatch(value) is not None


# ---------------------------------------------------------------------------------------
# The weights' bytes: intact and finite
# ---------------------------------------------------------------------------------------
def weights_checksum(weights: dict[str, torch.Tensor]) -> str:
    """A CRC-32 of each weight's name, dtype, shape and bytes, in name order: what checkpoints
    and exports store so that a damaged file is found on load (a fingerprint identifies a
    model; this tells whether the bytes read are the bytes written). Costs a fraction of
    reading the weights."""
    crc = 0
    for name in sorted(weights):
        tensor = weights[name].detach()
        tensor = (tensor if tensor.device.type == "cpu" else tensor.cpu()).contiguous()
        crc = zlib.crc32(f"{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode("utf-8", "surrogatepass"), crc)
        crc = zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy(), crc)   # [n] -> [n * itemsize] bytes, no copy
    return f"crc32:{crc:08x}"


def check_intact(state: dict[str, Any], source: str, what: str = "checkpoint") -> None:
    """The weights of a checkpoint dict (structure checked) are the ones written: each set
    matches the checksum stored with it (when the file has one), and every weight is finite.
    A checkpoint whose weights do not fit its config says that rather than "damaged"."""
    for which, stored in state.get("checksums", {}).items():
        if weights_checksum(state[which]) != stored:
            if what == "checkpoint":   # an edited or truncated table: say what is wrong with it
                config = config_from_state(state, source)
                check_components_installed(config, state.get("providers", {}), source)
                check_weights(config, state["model"], source)
            raise LyraError(f"{source}: damaged {what}: its {'EMA ' if which == 'ema' else ''}weights do not "
                            f"match the checksum stored with them (the file changed after it was written)")
    check_finite(state["model"], source)
    if "ema" in state:
        check_finite(state["ema"], source, "EMA weight")


_REDUCIBLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_finite(weights: dict[str, torch.Tensor], source: str, what: str = "weight") -> None:
    """Every weight is finite: a NaN or an infinity makes every decoded sample NaN (or noise).
    The first weight holding one is named."""
    for name, tensor in weights.items():
        if tensor.numel() == 0:
            continue
        if tensor.dtype in _REDUCIBLE:   # a NaN anywhere makes both NaN; no copy of the tensor
            finite = all(math.isfinite(x.item()) for x in torch.aminmax(tensor.detach()))
        else:   # float8 and the like (aminmax has no kernel for them)
            finite = bool(torch.isfinite(tensor.detach()).all())
        if not finite:
            found = "NaN" if torch.isnan(tensor).any() else "infinite values"
            raise LyraError(f"{source}: {what} {name} holds {found}; a model with non-finite weights cannot decode")


def check_ema_choice(state: dict[str, Any], source: str, ema: bool) -> None:
    """Raw weights (``ema=False``) cannot come from an export that holds only EMA weights."""
    if not ema and state.get("export_weights") == "ema":
        raise LyraError(f"{source}: is an export of EMA weights; the raw trained weights are not in it "
                        f"(export them with `lyra export --no-ema`, or load the training checkpoint)")


def check_components_installed(config: ModelConfig, providers: dict[str, str], source: str) -> None:
    """Every component the config names is registered; else which package to install (or
    whose plugin failed to load), from the checkpoint's providers."""
    for kind in COMPONENT_KINDS:
        name = getattr(config, kind)
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
    ``meta``: create tensors through torch's factories, without a fixed device.) Nor does a
    config claiming a huge number of layers: the build stops once it has made more weights
    (or modules) than the file could match (`_BuildBudget`).
    """
    tensors = 4 * len(weights) + 4096   # an exact match is needed (but a module may register weights it
                                        # drops, and buffers it does not store): far past the file's is refused
    try:
        with torch.device("meta"), _BuildBudget(tensors, modules=4 * tensors):
            expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except _OverBudget as exc:
        raise LyraError(f"{source}: weights do not match the model config (it describes more than {exc}; "
                        f"the file holds {len(weights):,} weights)") from None
    except LyraError:
        raise
    except RecursionError:
        raise LyraError(f"{source}: its model config does not build a model (it nests modules too deeply)") from None
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


class _OverBudget(Exception):
    """A build made more weights or modules than `_BuildBudget` allows (its message says which)."""


class _BuildBudget:
    """Within it, building modules in this thread raises `_OverBudget` once more than `tensors`
    weights (parameters and buffers) or `modules` modules have been made: what a config can make
    Lyra build before its weights are compared with the file's is bounded by the file."""

    def __init__(self, tensors: int, modules: int) -> None:
        self.limits = {"weights": tensors, "modules": modules}
        self.counts = {"weights": 0, "modules": 0}
        self.thread = threading.get_ident()

    def _counter(self, kind: str) -> Callable[..., None]:
        def count(*_: Any) -> None:
            if threading.get_ident() == self.thread:   # another thread's build is not this one's
                self.counts[kind] += 1
                if self.counts[kind] > self.limits[kind]:
                    raise _OverBudget(f"{self.limits[kind]:,} {kind}")
        return count

    def __enter__(self) -> "_BuildBudget":
        hooks = torch.nn.modules.module
        self.handles = [hooks.register_module_parameter_registration_hook(self._counter("weights")),
                        hooks.register_module_buffer_registration_hook(self._counter("weights")),
                        hooks.register_module_module_registration_hook(self._counter("modules"))]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def _count(shapes: dict[str, tuple[int, ...]]) -> str:
    return f"{sum(math.prod(s) for s in shapes.values()):,}"
