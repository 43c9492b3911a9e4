"""Import descript-audio-codec's models (DAC 1.0.0) as Lyra models with the ``rvq`` bottleneck.

    lyra import descript-audio-codec weights_44khz_8kbps_0.0.1.pth dac44.pt

Reads the file DAC's users hold: what ``DAC.save(path, package=False)`` (audiotools'
``BaseModel.save``) writes and ``dac download`` fetches, ``{"state_dict": ..., "metadata":
{"kwargs": {...}}}``, loaded with ``weights_only=True`` (nothing but tensors and plain values is
unpickled). A bare state dict (``torch.save(model.state_dict())``, or ``.safetensors``) is read
too, with the sample rate given (``--sample-rate``). No download. The layout, key by key (n
blocks, residual units j = 0..2, each ``block.{0,1,2,3}`` = Snake, conv k7, Snake, conv k1):

    encoder.block.0                      conv in (k=7)           -> encoder.conv_in
    encoder.block.{i+1}.block.{j}.block  residual unit           -> encoder.blocks.{i}.res.{j}.{act1,conv1,act2,conv2}
    encoder.block.{i+1}.block.3 / .4     Snake, strided conv     -> encoder.blocks.{i}.act / .down
    encoder.block.{n+1} / {n+2}          Snake, conv out (k=3)   -> encoder.act_out / .conv_out
    quantizer.quantizers.{q}             in_proj, out_proj, codebook -> bottleneck.quantizers.{q}.* (`rvq`)
    decoder.model.0                      conv in (k=7)           -> decoder.conv_in
    decoder.model.{i+1}.block.0 / .1     Snake, transposed conv  -> decoder.blocks.{i}.act / .up
    decoder.model.{i+1}.block.{j+2}.block residual unit          -> decoder.blocks.{i}.res.{j}.*
    decoder.model.{n+1} / {n+2} / {n+3}  Snake, conv out, tanh   -> decoder.act_out / .conv_out, final_tanh

That is Lyra's ``encoder_block`` and ``oobleck_decoder_block`` with dilations 1, 3, 9, a decoder
``decoder_base_channels`` wide at its end (DAC's decoder_dim / 2^n: its widths do not mirror the
encoder's), and the ``rvq`` bottleneck, whose pass is DAC's ``ResidualVectorQuantize`` in eval mode.
Every convolution (the quantisers' projections included) is weight-normed; the import folds
each into the weight DAC convolves with (`foreign_weights`). DAC's Snake1d has one parameter:
y = x + 1/(alpha + 1e-9) sin^2(alpha x). When every alpha is positive the model gets Lyra's
``snake`` (the fused Triton kernels on CUDA) with log_alpha = log_beta = log alpha, which
reproduces it within float32 rounding; if any alpha is zero or negative, which no positive
(alpha, beta) can express, every activation is ``dac_snake`` (`lyra.model.dac_snake`: DAC's
formula as written). The shape is read from the weights; the metadata's kwargs, when stored,
must agree with them. Every key must map and every Lyra weight be found with its shape, or
nothing is written; every tensor must be a finite floating-point array. Decoders with an odd
stride (DAC's 16 and 24 kHz models) are refused: DAC's transposed convolution makes T*s - 1
samples of them where Lyra's makes T*s.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lyra.audio.codes import bits_per_code
from lyra.core.errors import LyraError, first_line, kind_of
from lyra.core.limits import MAX_SAMPLE_RATE
from lyra.model.config import ModelConfig
from lyra.model.importers.foreign_weights import check_tensors, fold_weight_norm, match_names

DILATIONS = (1, 3, 9)        # DAC's residual units, kernel 7
_UNITS = len(DILATIONS)
# DAC's constructor arguments as `BaseModel.save` stores them (metadata["kwargs"]), and their types.
KWARGS = {"encoder_dim": int, "encoder_rates": list, "latent_dim": (int, type(None)), "decoder_dim": int,
          "decoder_rates": list, "n_codebooks": int, "codebook_size": int, "codebook_dim": (int, list),
          "quantizer_dropout": (bool, int, float), "sample_rate": int}


@dataclass
class Imported:
    """What `import_dac` read: the Lyra weights and config, and how they were found."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    folded: int                      # weight-normed convolutions folded into plain weights
    nonpositive_alphas: int          # Snake alphas <= 0 (then every activation is `dac_snake`)
    kwargs: dict[str, Any] | None    # DAC's stored constructor arguments, if the file has them


def import_dac(src: str | Path, *, sample_rate: int | None = None) -> Imported:
    """Read `src` and return the equivalent Lyra model's config and weights (see module doc)."""
    src = Path(src)
    raw, kwargs = read_dac_file(src)
    check_tensors(raw, src)
    weights, folded = fold_weight_norm(raw, src)
    config = infer_config(weights, kwargs, sample_rate, str(src))
    alphas = [w for k, w in weights.items() if k.endswith(".alpha")]
    bad = sum(int((a <= 0).sum()) for a in alphas)
    return Imported(config, map_weights(weights, config, str(src)), folded, bad, kwargs)


# ---------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------
def read_dac_file(src: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, metadata kwargs or None) of a DAC weights file; one-line errors otherwise."""
    if not src.is_file():
        raise LyraError(f"{src}: no such file")
    if src.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(src))
        except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
            raise LyraError(f"{src}: not a readable safetensors file ({first_line(exc)})") from None
    else:
        state = _load_pickled(src)
    kwargs = None
    if isinstance(state, dict) and state.get("format") == "lyra-checkpoint":
        raise LyraError(f"{src}: a Lyra checkpoint already, not a descript-audio-codec file (use it with -c as it is)")
    if isinstance(state, dict) and "state_dict" in state:
        metadata = state.get("metadata")
        state = state["state_dict"]
        if metadata is not None:
            kwargs = _read_kwargs(metadata, src)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise LyraError(f"{src}: not a descript-audio-codec weights file "
                        "(no table of named tensors under 'state_dict')")
    other = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if other is not None:
        raise LyraError(f"{src}: state_dict entry {other} is {kind_of(state[other])}, not a tensor")
    _check_layout(list(state), src)
    return state, kwargs


def _load_pickled(src: Path) -> Any:
    try:
        return torch.load(src, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001
        try:
            return torch.load(src, map_location="cpu", weights_only=True)   # older, non-zip files
        except Exception:  # noqa: BLE001
            pass
        if _is_torch_package(src):
            raise LyraError(f"{src}: a torch.package archive (DAC's save() by default), which Lyra does not run; write "
                            "the weights with model.save(path, package=False), as DAC's published files are") from None
        raise LyraError(f"{src}: cannot be read safely as tensors ({first_line(exc)}); DAC's weight files are "
                        "torch.save'd dicts of a state_dict and plain metadata") from None


def _is_torch_package(src: Path) -> bool:
    if not zipfile.is_zipfile(src):
        return False
    with zipfile.ZipFile(src) as archive:
        return any(n.endswith("/.data/extern_modules") for n in archive.namelist())


def _read_kwargs(metadata: Any, src: Path) -> dict[str, Any]:
    """metadata["kwargs"], each argument Lyra reads of the type DAC gives it (unknown ones are
    dropped, as DAC's own ``load`` drops them)."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("kwargs"), dict):
        raise LyraError(f"{src}: metadata must be a table with a 'kwargs' table (DAC's constructor arguments), "
                        f"got {kind_of(metadata.get('kwargs') if isinstance(metadata, dict) else metadata)}")
    kwargs = {}
    for key, kind in KWARGS.items():
        if key not in metadata["kwargs"]:
            continue
        value = metadata["kwargs"][key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        if ok and isinstance(value, list):
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise LyraError(f"{src}: metadata kwargs.{key} must be {' or '.join(kind_of(k()) for k in kinds)}"
                            f"{' of integers' if list in kinds else ''}, got {kind_of(value)}")
        kwargs[key] = value
    rate = kwargs.get("sample_rate")
    if rate is not None and not 0 < rate <= MAX_SAMPLE_RATE:
        raise LyraError(f"{src}: metadata kwargs.sample_rate must be in 1..{MAX_SAMPLE_RATE}, got {rate}")
    return kwargs


def _check_layout(names: list[str], src: Path) -> None:
    """DAC's three parts are there; else say what the file looks like instead."""
    parts = ("encoder.block.0.", "quantizer.quantizers.0.", "decoder.model.0.")
    if all(any(n.startswith(p) for n in names) for p in parts):
        return
    if any(n.startswith(("encoder.layers.0.", "pretransform.model.encoder.layers.0.", "autoencoder.encoder."))
           for n in names):
        hint = ": it is stable-audio-tools' Oobleck layout (lyra import stable-audio-tools)"
    elif any(n.startswith("encoder.conv_in.") for n in names):
        hint = ": it holds a Lyra model's weights"
    else:
        hint = ""
    raise LyraError(f"{src}: no descript-audio-codec model found (expected keys under "
                    f"{', '.join(p + '*' for p in parts)}){hint}")


# ---------------------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------------------
def infer_config(weights: dict[str, torch.Tensor], kwargs: dict[str, Any] | None, sample_rate: int | None,
                 source: str) -> ModelConfig:
    """The Lyra `ModelConfig` of the DAC model these (folded) weights belong to."""
    def shape(name: str, rank: int = 3) -> tuple[int, ...]:
        if name not in weights:
            raise LyraError(f"{source}: no {name}; not descript-audio-codec's architecture")
        if weights[name].dim() != rank:
            raise LyraError(f"{source}: {name} is {list(weights[name].shape)}; descript-audio-codec's is "
                            f"{'[out, in, kernel]' if rank == 3 else '[codebook_size, codebook_dim]'}")
        return tuple(weights[name].shape)

    def count(pattern: str) -> int:
        return 1 + max((int(m.group(1)) for k in weights if (m := re.match(pattern, k))), default=-1)

    n = count(r"encoder\.block\.(\d{1,9})\.") - 3                    # conv in, n blocks, Snake, conv out
    if n < 1:
        raise LyraError(f"{source}: the encoder has no blocks; not descript-audio-codec's architecture")
    base, channels, _ = shape("encoder.block.0.weight")
    downs = [shape(f"encoder.block.{i + 1}.block.{_UNITS + 1}.weight") for i in range(n)]
    ups = [shape(f"decoder.model.{i + 1}.block.1.weight") for i in range(n)]   # transposed: [in, out, k]
    if any(k % 2 for *_, k in downs + ups):
        raise LyraError(f"{source}: a resampling kernel of odd size; descript-audio-codec's are twice the stride")
    strides = [k // 2 for *_, k in downs]
    rates = [k // 2 for *_, k in ups]
    if rates != strides[::-1]:
        raise LyraError(f"{source}: decoder_rates {rates} do not mirror encoder_rates {strides}; Lyra's decoder "
                        "upsamples by the encoder's strides in reverse")
    odd = [s for s in rates if s % 2]
    if odd:
        raise LyraError(f"{source}: stride {odd[0]} is odd: DAC's transposed convolution gives T*{odd[0]} - 1 samples "
                        f"where Lyra's gives T*{odd[0]}; only models with even strides import (the 44.1 kHz ones)")
    mults = [w // base for w, _, _ in downs]
    if any(w % base for w, _, _ in downs):
        raise LyraError(f"{source}: encoder widths {[w for w, _, _ in downs]} are not multiples of its first, {base}")
    latent = shape(f"encoder.block.{n + 2}.weight")[0]
    dec_widths = [ups[0][0]] + [out for _, out, _ in ups]            # decoder_dim, decoder_dim / 2, ...
    dec_base = dec_widths[-1]
    if dec_widths != [dec_base * m for m in (1, *mults)][::-1]:
        raise LyraError(f"{source}: decoder widths {dec_widths} are not {dec_base} x the encoder's multipliers "
                        f"{[1, *mults][::-1]}; Lyra builds no such decoder")
    if shape("decoder.model.0.weight")[1] != latent:
        raise LyraError(f"{source}: the decoder takes {shape('decoder.model.0.weight')[1]} channels, the encoder "
                        f"gives {latent}")
    quantizers = count(r"quantizer\.quantizers\.(\d{1,9})\.")
    books = [shape(f"quantizer.quantizers.{q}.codebook.weight", 2) for q in range(quantizers)]
    if len(set(books)) > 1:
        q = next(q for q, b in enumerate(books) if b != books[0])
        raise LyraError(f"{source}: codebook {q} is {list(books[q])}, codebook 0 {list(books[0])}; Lyra's rvq "
                        "has one codebook size and dimension for all")
    size, dim = books[0]
    rate = _sample_rate(kwargs, sample_rate, source)
    if kwargs is not None:
        _check_kwargs(kwargs, dict(encoder_dim=base, encoder_rates=strides, latent_dim=latent,
                                   decoder_dim=dec_widths[0], decoder_rates=rates, n_codebooks=quantizers,
                                   codebook_size=size, codebook_dim=dim), source)
    positive = all(w.device.type == "meta" or bool((w > 0).all())   # meta: a layout, checked without its weights
                   for k, w in weights.items() if k.endswith(".alpha"))
    try:
        config = ModelConfig(
            sample_rate=rate, channels=channels, base_channels=base, latent_dim=latent,
            decoder_base_channels=0 if dec_base == base else dec_base, c_mults=tuple(mults),
            strides=tuple(strides), dilations=DILATIONS, residual_kernel_size=7, decoder_in_kernel=7,
            decoder_out_bias=f"decoder.model.{n + 2}.bias" in weights, final_tanh=True,
            activation="snake" if positive else "dac_snake", decoder_block="oobleck_decoder_block",
            bottleneck="rvq", options={"rvq": {"num_quantizers": quantizers, "codebook_size": size,
                                                "codebook_dim": dim}},
        )
        config.check_size()
    except LyraError as exc:   # a key of the config the weights imply
        raise LyraError(f"{source}: the weights make no model Lyra builds ({exc})") from None
    return config


def _sample_rate(kwargs: dict[str, Any] | None, given: int | None, source: str) -> int:
    stored = (kwargs or {}).get("sample_rate")
    if given is not None and not 0 < given <= MAX_SAMPLE_RATE:
        raise LyraError(f"--sample-rate: must be in 1..{MAX_SAMPLE_RATE}, got {given}")
    if stored is not None and given is not None and stored != given:
        raise LyraError(f"{source}: its metadata says sample_rate {stored}, --sample-rate says {given}")
    if stored is None and given is None:
        raise LyraError(f"{source}: no sample rate stored (no metadata kwargs.sample_rate); pass --sample-rate")
    return stored if stored is not None else given


def _check_kwargs(kwargs: dict[str, Any], found: dict[str, Any], source: str) -> None:
    """The stored constructor arguments agree with the weights (the file was not edited apart)."""
    for key, value in found.items():
        said = kwargs.get(key)
        if said is None:
            continue
        if key == "codebook_dim" and isinstance(said, list):
            if said != [value] * kwargs.get("n_codebooks", len(said)):
                raise LyraError(f"{source}: metadata kwargs.codebook_dim is {said}, but the weights have {value} "
                                "for every codebook")
            continue
        if said != value:
            raise LyraError(f"{source}: metadata kwargs.{key} is {said}, but the weights have {value}")
    dropout = kwargs.get("quantizer_dropout", 0)
    if not 0 <= float(dropout) <= 1:
        raise LyraError(f"{source}: metadata kwargs.quantizer_dropout must be in 0..1, got {dropout}")


# ---------------------------------------------------------------------------------------
# The key map
# ---------------------------------------------------------------------------------------
def key_map(config: ModelConfig) -> dict[str, str]:
    """Lyra module path -> DAC module path, for every module holding weights."""
    n = len(config.strides)
    paths = {"encoder.conv_in": "encoder.block.0", "encoder.act_out": f"encoder.block.{n + 1}",
             "encoder.conv_out": f"encoder.block.{n + 2}", "decoder.conv_in": "decoder.model.0",
             "decoder.act_out": f"decoder.model.{n + 1}", "decoder.conv_out": f"decoder.model.{n + 2}"}
    for i in range(n):
        enc, dec = f"encoder.block.{i + 1}.block", f"decoder.model.{i + 1}.block"
        for j in range(_UNITS):
            for lyra, dac in ((f"encoder.blocks.{i}.res.{j}", f"{enc}.{j}.block"),
                              (f"decoder.blocks.{i}.res.{j}", f"{dec}.{j + 2}.block")):
                for k, name in enumerate(("act1", "conv1", "act2", "conv2")):
                    paths[f"{lyra}.{name}"] = f"{dac}.{k}"
        paths[f"encoder.blocks.{i}.act"], paths[f"encoder.blocks.{i}.down"] = f"{enc}.{_UNITS}", f"{enc}.{_UNITS + 1}"
        paths[f"decoder.blocks.{i}.act"], paths[f"decoder.blocks.{i}.up"] = f"{dec}.0", f"{dec}.1"
    for q in range(config.options["rvq"]["num_quantizers"]):
        for part in ("in_proj", "out_proj", "codebook"):
            paths[f"bottleneck.quantizers.{q}.{part}"] = f"quantizer.quantizers.{q}.{part}"
    return paths


# Lyra's leaf -> DAC's: Snake's alpha feeds both of Lyra's log-parameters (beta = alpha).
_LEAVES = {"log_alpha": "alpha", "log_beta": "alpha", "alpha": "alpha", "weight": "weight", "bias": "bias"}


def map_weights(weights: dict[str, torch.Tensor], config: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """Lyra's state dict from the folded DAC weights: every key maps, or an error."""
    from lyra.model.stored_model import check_weights

    wanted = match_names(config, key_map(config), _LEAVES, weights, source, model="model of descript-audio-codec",
                         layout="descript-audio-codec's layout")
    out = {}
    for name, dac in wanted.items():
        tensor = weights[dac]
        if dac.endswith(".alpha"):
            if tensor.dim() != 3 or tensor.shape[0] != 1 or tensor.shape[2] != 1:
                raise LyraError(f"{source}: {dac} is {list(tensor.shape)}; Snake1d's alpha is [1, channels, 1]")
            tensor = tensor.reshape(-1)                                      # [1, C, 1] -> [C]
            if not name.endswith(".alpha"):                                  # Lyra's snake: log-parameters
                tensor = tensor.double().log().float()                       # exp gives alpha back within 1 ulp
        out[name] = tensor
    check_weights(config, out, source)     # every shape, against the model the config builds
    return out


def bitrate(config: ModelConfig) -> float:
    """Bits per second of all the codes: frames/s x quantisers x bits per code."""
    rvq = config.options["rvq"]
    return config.frame_rate * rvq["num_quantizers"] * bits_per_code(rvq["codebook_size"])
