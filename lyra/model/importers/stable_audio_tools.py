"""Import stable-audio-tools' Oobleck VAE (Stable Audio Open's autoencoder) as a Lyra model.

    lyra import stable-audio-tools model.safetensors sao-vae.pt

Reads a full Stable Audio Open file (the VAE under ``pretransform.model.``), an autoencoder
training checkpoint (under ``autoencoder.``) or an unwrapped autoencoder, with no download
and nothing unpickled but tensors (`PREFIXES`; docs/stable-audio-open.md). Their layout, key
by key (n blocks, each with residual units j = 0..2):

    encoder.layers.0                  conv in             -> encoder.conv_in
    encoder.layers.{i+1}.layers.{j}   residual unit       -> encoder.blocks.{i}.res.{j}
             .layers.{0,1,2,3}        snake, conv, snake, conv -> act1, conv1, act2, conv2
    encoder.layers.{i+1}.layers.3/4   snake, strided conv -> encoder.blocks.{i}.act / .down
    encoder.layers.{n+1} / {n+2}      snake, conv out     -> encoder.act_out / .conv_out
    decoder.layers.0                  conv in (k=7)       -> decoder.conv_in
    decoder.layers.{i+1}.layers.0/1   snake, transposed conv -> decoder.blocks.{i}.act / .up
    decoder.layers.{i+1}.layers.{j+2} residual unit       -> decoder.blocks.{i}.res.{j}
    decoder.layers.{n+1} / {n+2}      snake, conv out (no bias) -> decoder.act_out / .conv_out

Snake's ``alpha`` / ``beta`` are already log-scale (``alpha_logscale=True``), so they become
``log_alpha`` / ``log_beta`` as they are. Every conv is weight-normed (``weight_g`` /
``weight_v``, or ``parametrizations.weight.original0`` / ``original1``); the import folds
each into the plain weight stable-audio-tools computes in its forward (``torch._weight_norm``,
the same function), so outputs agree within float32 rounding. The model's shape is read from
the weights; ``model_config.json`` (``--config``) is only needed for what weights do not show:
the decoder's final tanh (and the sample rate). Every key under the VAE's prefix must map and
every Lyra weight must be found, with its shape, or nothing is written; every tensor read must
be a non-empty, finite floating-point array, and every weight norm fold to finite weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lyra.core.errors import LyraError, first_line, kind_of
from lyra.core.limits import MAX_SAMPLE_RATE
from lyra.core.toml import read_config_bytes
from lyra.model.config import ModelConfig
from lyra.model.importers.foreign_weights import check_tensors, fold_weight_norm, match_names  # noqa: F401  (re-exported)

# Where the VAE sits in each kind of file, most specific first.
PREFIXES = ("pretransform.model.", "autoencoder.", "")
_RESIDUAL_UNITS = 3          # Oobleck's blocks: dilations 1, 3, 9, kernel 7


@dataclass
class Imported:
    """What `import_vae` read: the Lyra weights and config, and how they were found."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    prefix: str
    folded: int              # weight-normed convolutions folded into plain weights


def import_vae(src: str | Path, config_json: str | Path | None = None, *,
               prefix: str | None = None, final_tanh: bool | None = None) -> Imported:
    """Read `src` and return the equivalent Lyra model's config and weights (see module doc)."""
    src = Path(src)
    sat_config = read_sat_config(config_json) if config_json is not None else None
    source = _Source(src)
    prefix = _choose_prefix(source.names, prefix, src)
    raw = source.read([k for k in source.names if k.startswith(prefix)])
    check_tensors(raw, src)
    raw = {k[len(prefix):]: v for k, v in raw.items()}
    weights, folded = fold_weight_norm(raw, src, prefix)
    config = infer_config(weights, sat_config, final_tanh, full_model=prefix == PREFIXES[0], source=str(src))
    return Imported(config, map_weights(weights, config, str(src)), prefix, folded)


# ---------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------
class _Source:
    """A ``.safetensors`` or pickled (``.ckpt`` / ``.pt``) file of named tensors, opened once.

    Only the tensors asked for are read: a full Stable Audio Open file holds a 1B-parameter
    diffusion model beside the VAE. Pickled files are memory-mapped and loaded with
    ``weights_only=True``: nothing but tensors and plain containers is ever unpickled.
    """

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise LyraError(f"{path}: no such file")
        self.path = path
        self._state: dict[str, torch.Tensor] | None = None
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt") as f:
                    self.names = list(f.keys())
            except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
                raise LyraError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
        else:
            self._state = _pickled_state(path)
            self.names = list(self._state)

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        if self._state is not None:
            return {k: self._state[k] for k in names}
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in names}


def _pickled_state(src: Path) -> dict[str, torch.Tensor]:
    """The flat {name: tensor} table of a ``.ckpt`` / ``.pt`` (a Lightning checkpoint's ``state_dict``)."""
    try:
        state = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001
        try:
            state = torch.load(src, map_location="cpu", weights_only=True)   # older, non-zip files
        except Exception:  # noqa: BLE001
            raise LyraError(
                f"{src}: cannot be read safely as tensors ({first_line(exc)}); save its state_dict "
                "with stable-audio-tools' unwrap_model.py, or as .safetensors"
            ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]                     # Lightning or unwrapped checkpoints
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise LyraError(f"{src}: not a table of named tensors, nor a checkpoint with a 'state_dict'")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _choose_prefix(names: list[str], prefix: str | None, src: Path) -> str:
    def has_vae(p: str) -> bool:
        return any(n.startswith(f"{p}encoder.layers.0.") for n in names) and \
            any(n.startswith(f"{p}decoder.layers.0.") for n in names)

    if prefix is not None:
        if not has_vae(prefix):
            raise LyraError(f"{src}: no Oobleck encoder and decoder under the prefix '{prefix}'")
        return prefix
    for candidate in PREFIXES:
        if has_vae(candidate):
            return candidate
    found = sorted({m.group(1) for n in names if (m := re.match(r"(.*)encoder\.layers\.0\.", n))})
    hint = f"; encoders found under {', '.join(repr(p) for p in found)} (pass --prefix)" if found else ""
    raise LyraError(f"{src}: no stable-audio-tools Oobleck VAE found (looked under "
                    f"{', '.join(repr(p) for p in PREFIXES)}){hint}")


# ---------------------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------------------
def read_sat_config(path: str | Path) -> dict[str, Any]:
    """The autoencoder part of a stable-audio-tools ``model_config.json`` (an autoencoder's own
    config, or a diffusion model's with the autoencoder as its pretransform), checked for what
    Lyra builds."""
    path = Path(path)
    data = _read_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise LyraError(f"{path}: not a stable-audio-tools model config (no 'model' table)")
    if data.get("model_type") != "autoencoder":
        pre = model.get("pretransform")
        if not isinstance(pre, dict) or pre.get("type") != "autoencoder":
            raise LyraError(f"{path}: model_type {_shown(data.get('model_type'))} has no autoencoder pretransform")
        model = _get(pre, "config", dict, {}, "model.pretransform", path)
    enc, dec = (_get(model, part, dict, {}, "model", path) for part in ("encoder", "decoder"))
    for part, table in (("encoder", enc), ("decoder", dec)):
        if table.get("type") != "oobleck":
            raise LyraError(f"{path}: {part} type {_shown(table.get('type'))} is not 'oobleck', the only one Lyra imports")
        options = _get(table, "config", dict, {}, part, path)
        if not _get(options, "use_snake", bool, False, part, path):
            raise LyraError(f"{path}: {part} uses ELU (use_snake is false); Lyra imports Snake models only")
        for flag in ("antialias_activation", "use_nearest_upsample"):
            if _get(options, flag, bool, False, part, path):
                raise LyraError(f"{path}: {part}.{flag} is true; Lyra imports models without it only")
        for key in ("in_channels", "out_channels", "channels", "latent_dim"):
            _get(options, key, int, 1, part, path)
        for key in ("c_mults", "strides"):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in _get(options, key, list, [], part, path)):
                raise LyraError(f"{path}: {part}.{key} must be a list of integers")
    bottleneck = _get(model, "bottleneck", (dict, type(None)), None, "model", path) or {}
    if bottleneck.get("type") != "vae":
        raise LyraError(f"{path}: bottleneck {_shown(bottleneck.get('type'))} is not 'vae', the only one Lyra imports")
    rate = _get(data, "sample_rate", int, 44100, "", path)
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise LyraError(f"{path}: sample_rate must be between 1 and {MAX_SAMPLE_RATE:,} Hz, got {rate}")
    _get(dec.get("config", {}), "final_tanh", bool, True, "decoder", path)
    return {"sample_rate": rate, "encoder": enc.get("config", {}),
            "decoder": dec.get("config", {}), "latent_dim": model.get("latent_dim"), "source": str(path)}


_MAX_DIGITS = 100         # no config integer has more


def _read_json(path: Path) -> Any:
    """The JSON in `path`, as plain values; every way a file can fail to be one is a one-line
    `LyraError` naming it (NaN, Infinity and numbers no config holds included)."""
    raw = read_config_bytes(Path(path), "a model_config.json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LyraError(f"{path}: not valid JSON ({first_line(exc)})") from None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise LyraError(f"{path}: not valid JSON ({first_line(exc)})") from None
    except _BadNumber as exc:
        raise LyraError(f"{path}: not a config Lyra reads ({exc})") from None
    except RecursionError:
        raise LyraError(f"{path}: not a config Lyra reads (arrays or objects nested too deeply)") from None


class _BadNumber(ValueError):
    """A JSON number no config holds (NaN, an infinity, a thousand-digit integer)."""


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a number a config may hold")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise _BadNumber(f"a {len(text.lstrip('-')):,}-digit integer is not a number a config may hold")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(f"{text[:20]}{'...' if len(text) > 20 else ''} is beyond the largest float")
    return value


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str, path: Path) -> Any:
    """``table[key]`` (or `default`), which must be of `kind` (a boolean is no integer here)."""
    value = table.get(key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(kind_of(k()) if k is not type(None) else "nothing" for k in kinds)
        raise LyraError(f"{path}: {where + '.' if where else ''}{key} must be {names}, got {kind_of(value)}")
    return value


def _shown(value: Any) -> str:
    """`value` for a message: its repr when short, else what it is."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else ""
    return text if text and len(text) <= 60 else kind_of(value)


def infer_config(weights: dict[str, torch.Tensor], sat: dict[str, Any] | None, final_tanh: bool | None,
                 *, full_model: bool, source: str) -> ModelConfig:
    """The Lyra `ModelConfig` of the Oobleck VAE these (folded) weights belong to."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in weights:
            raise LyraError(f"{source}: no {name}; not an Oobleck VAE with Snake activations")
        if weights[name].dim() != 3:
            raise LyraError(f"{source}: {name} is {list(weights[name].shape)}: conv weights of the wrong rank "
                            f"(a convolution's weight is [out, in, kernel])")
        return tuple(weights[name].shape)

    top = max((int(m.group(1)) for k in weights if (m := re.match(r"encoder\.layers\.(\d{1,9})\.", k))), default=-1)
    n = top - 2                                                   # conv in, n blocks, snake, conv out
    if n < 1:
        raise LyraError(f"{source}: the encoder has no blocks; not an Oobleck VAE")
    out_ch, channels, _ = shape("encoder.layers.0.weight")
    downs = [shape(f"encoder.layers.{i + 1}.layers.{_RESIDUAL_UNITS + 1}.weight") for i in range(n)]
    c_mults = []
    for i, (width, _, kernel) in enumerate(downs):
        if width % out_ch or kernel % 2:
            raise LyraError(f"{source}: encoder block {i} is {width} wide with a kernel of {kernel}; "
                            f"not an Oobleck block over base width {out_ch}")
        c_mults.append(width // out_ch)
    latent_dim = shape("decoder.layers.0.weight")[1]
    if shape(f"encoder.layers.{n + 2}.weight")[0] != 2 * latent_dim:
        raise LyraError(f"{source}: the encoder head gives {shape(f'encoder.layers.{n + 2}.weight')[0]} "
                        f"channels, the VAE bottleneck needs twice the decoder's {latent_dim}")
    if final_tanh is None and sat is not None:
        final_tanh = bool(sat["decoder"].get("final_tanh", True))   # OobleckDecoder's default
    if final_tanh is None:
        if not full_model:
            raise LyraError(f"{source}: whether the decoder ends in tanh is not stored in the weights; "
                            "pass --config model_config.json, or --final-tanh / --no-final-tanh")
        final_tanh = False                                       # Stable Audio Open 1.0
    try:
        config = ModelConfig(
            sample_rate=sat["sample_rate"] if sat else 44100, channels=channels, base_channels=out_ch,
            latent_dim=latent_dim, c_mults=tuple(c_mults), strides=tuple(k // 2 for _, _, k in downs),
            dilations=(1, 3, 9), residual_kernel_size=7, posterior="softplus",
            decoder_in_kernel=shape("decoder.layers.0.weight")[2],
            decoder_out_bias=f"decoder.layers.{n + 2}.bias" in weights, final_tanh=final_tanh,
            decoder_block="oobleck_decoder_block",
        )
    except LyraError as exc:   # a key of the config the weights imply
        raise LyraError(f"{source}: the weights make no model Lyra builds ({exc})") from None
    if sat is not None:
        _check_against_json(config, sat)
    return config


def _check_against_json(config: ModelConfig, sat: dict[str, Any]) -> None:
    enc, dec = sat["encoder"], sat["decoder"]
    expected = {
        "encoder.in_channels": (enc.get("in_channels", 2), config.channels),
        "encoder.channels": (enc.get("channels", 128), config.base_channels),
        "encoder.c_mults": (list(enc.get("c_mults", [1, 2, 4, 8])), list(config.c_mults)),
        "encoder.strides": (list(enc.get("strides", [2, 4, 8, 8])), list(config.strides)),
        "encoder.latent_dim": (enc.get("latent_dim", 32), 2 * config.latent_dim),
        "decoder.out_channels": (dec.get("out_channels", 2), config.channels),
        "decoder.channels": (dec.get("channels", 128), config.base_channels),
        "decoder.c_mults": (list(dec.get("c_mults", [1, 2, 4, 8])), list(config.c_mults)),
        "decoder.strides": (list(dec.get("strides", [2, 4, 8, 8])), list(config.strides)),
        "decoder.latent_dim": (dec.get("latent_dim", 32), config.latent_dim),
    }
    for key, (said, found) in expected.items():
        if said != found:
            raise LyraError(f"{sat['source']}: {key} is {said}, but the weights have {found}")


# ---------------------------------------------------------------------------------------
# The key map
# ---------------------------------------------------------------------------------------
def key_map(config: ModelConfig) -> dict[str, str]:
    """Lyra module path -> stable-audio-tools module path, for every module holding weights."""
    n, units = len(config.strides), range(_RESIDUAL_UNITS)
    paths = {"encoder.conv_in": "encoder.layers.0", "decoder.conv_in": "decoder.layers.0"}
    for part in ("encoder", "decoder"):
        paths[f"{part}.act_out"] = f"{part}.layers.{n + 1}"
        paths[f"{part}.conv_out"] = f"{part}.layers.{n + 2}"
    for i in range(n):
        enc, dec = f"encoder.layers.{i + 1}.layers", f"decoder.layers.{i + 1}.layers"
        res = {f"encoder.blocks.{i}.res.{j}": f"{enc}.{j}" for j in units}
        res |= {f"decoder.blocks.{i}.res.{j}": f"{dec}.{j + 2}" for j in units}
        for lyra, sat in res.items():
            for k, name in enumerate(("act1", "conv1", "act2", "conv2")):
                paths[f"{lyra}.{name}"] = f"{sat}.layers.{k}"
        paths[f"encoder.blocks.{i}.act"] = f"{enc}.{_RESIDUAL_UNITS}"
        paths[f"encoder.blocks.{i}.down"] = f"{enc}.{_RESIDUAL_UNITS + 1}"
        paths[f"decoder.blocks.{i}.act"] = f"{dec}.0"
        paths[f"decoder.blocks.{i}.up"] = f"{dec}.1"
    return paths


_LEAVES = {"log_alpha": "alpha", "log_beta": "beta", "weight": "weight", "bias": "bias"}


def map_weights(weights: dict[str, torch.Tensor], config: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """Lyra's state dict from the folded stable-audio-tools weights: every key maps, or an error."""
    from lyra.model.stored_model import check_weights

    wanted = match_names(config, key_map(config), _LEAVES, weights, source,
                         model="Oobleck model (anti-aliased activations, nearest-neighbour upsampling and other "
                               "variants are not supported)", layout="the Oobleck layout Lyra imports")
    out = {name: weights[sat] for name, sat in wanted.items()}
    check_weights(config, out, source)     # every shape, against the model the config builds
    return out
