"""The exported-model format: what `lyra export` writes, and reading it back, checked.

An export is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: an 8-byte
little-endian header length, a JSON header naming each tensor's dtype, shape and byte range,
then the raw data. The tensors are the model's state dict, fp32 as stored. The header's
``__metadata__`` (all strings) says what the weights are:

    format          "lyra-model"
    format_version  "1"
    model_config    the ModelConfig as JSON (`ModelConfig.to_dict`)
    fingerprint     `lyra.model.checkpoint.model_fingerprint` of the model these weights make: a
                    .lyra file written with the checkpoint decodes with the export, and back
    weights         "ema" (the checkpoint's EMA weights) or "model" (its trained weights)
    providers       JSON: "kind/name" -> the package that provided each component
    lyra_version    the Lyra that wrote it
    checksum        `lyra.model.stored_model.weights_checksum` of the tensors, verified on load
                    (absent from exports written before it was stored: not verified then)

`lyra.model.checkpoint.read_checkpoint` tells an export from a checkpoint by content (a torch
zip starts with "PK", safetensors with its header length and "{"), not by the file's suffix,
and turns it into the checkpoint dict it stands for (`read_export`). Its header is checked
(bounded size, JSON, every tensor a dense floating-point array whose byte range lies in the
file, Lyra's metadata) and its tensor names and shapes compared with the config, on the meta
device, before a byte of weights is read; the weights read must match their checksum and be
finite. Nothing is unpickled. See docs/codec.md.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from lyra.core.errors import LyraError, first_line
from lyra.model.stored_model import FORMAT as CHECKPOINT_FORMAT, VERSION as CHECKPOINT_VERSION
from lyra.model.stored_model import (check_components_installed, check_intact, check_weights, config_from_state,
                                     is_checksum, is_fingerprint)

FORMAT = "lyra-model"
FORMAT_VERSION = "1"
METADATA_KEYS = ("format", "format_version", "model_config", "fingerprint", "weights", "providers", "lyra_version",
                 "checksum")
ADDED_LATER = ("checksum",)       # metadata that exports written by older Lyras lack
MAX_HEADER = 100_000_000          # safetensors' own limit on the JSON header
# safetensors dtype -> (torch dtype name, bytes per element); weights are floating point.
FLOAT_DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2)}


def is_safetensors(path: str | Path) -> bool:
    """Whether the file looks like safetensors (a header length, then a JSON object), by content."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and not head.startswith(b"PK") and head[8:9] == b"{"


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors a safetensors file declares (name -> dtype, shape, byte range), checked
    against the file's size, and its metadata; nothing else of the file is read."""
    path = Path(path)
    damaged = f"{path}: damaged safetensors header"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        length = int.from_bytes(f.read(8), "little")
        if length > MAX_HEADER or 8 + length > size:
            raise LyraError(f"{damaged} (it claims {length:,} bytes; the file has {size:,})")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:   # ValueError: also integers of thousands of digits
        raise LyraError(f"{damaged} (not JSON: {first_line(exc).split(';')[0]})") from None
    except RecursionError:
        raise LyraError(f"{damaged} (JSON nested too deeply)") from None
    if not isinstance(header, dict):
        raise LyraError(f"{damaged} (not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise LyraError(f"{damaged} (its __metadata__ is not a table of strings)")
    data_size = size - 8 - length
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise LyraError(f"{damaged} (tensor {name} is not described by a table)")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)):
            raise LyraError(f"{damaged} (tensor {name} has no valid shape and data_offsets)")
        if dtype not in FLOAT_DTYPES:
            raise LyraError(f"{path}: weight {name} is a {dtype} tensor, not floating point")
        begin, end = offsets
        nbytes = math.prod(shape) * FLOAT_DTYPES[dtype][1]
        if not 0 <= begin <= end <= data_size or end - begin != nbytes:
            raise LyraError(f"{damaged} (tensor {name} of shape {shape} claims bytes {begin}..{end}; "
                            f"the file holds {data_size:,} bytes of data)")
    return header, metadata


def read_export(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict (`lyra.model.stored_model`) an exported model stands for, checked
    as `read_checkpoint` checks a checkpoint, plus ``"export_weights"`` ("ema" or "model")
    marking it as an export. Tensor names and shapes are compared with the config before the
    weights are read."""
    from safetensors.torch import load_file

    path = Path(path)
    header, metadata = read_header(path)
    if metadata.get("format") != FORMAT:
        raise LyraError(f"{path}: not a Lyra model export (a safetensors file without Lyra's metadata; "
                        f"`lyra export` writes one from a checkpoint)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise LyraError(f"{path}: Lyra model export version {metadata.get('format_version')} is not supported "
                        f"(expected {FORMAT_VERSION})")
    missing = [key for key in METADATA_KEYS if key not in metadata and key not in ADDED_LATER]
    if missing:
        raise LyraError(f"{path}: incomplete Lyra model export (its metadata has no '{missing[0]}')")
    config_data = _json_table(metadata["model_config"], "model_config", path)
    providers = _json_table(metadata["providers"], "providers", path)
    if not all(isinstance(v, str) for v in providers.values()):
        raise LyraError(f"{path}: metadata 'providers' must be a table of package names")
    fingerprint = metadata["fingerprint"]
    if not is_fingerprint(fingerprint):
        raise LyraError(f"{path}: metadata 'fingerprint' must be a 16-digit hexadecimal string, got {fingerprint!r}")
    if metadata["weights"] not in ("ema", "model"):
        raise LyraError(f"{path}: metadata 'weights' must be 'ema' or 'model', got {metadata['weights']!r}")
    checksum = metadata.get("checksum")
    if checksum is not None and not is_checksum(checksum):
        raise LyraError(f"{path}: metadata 'checksum' must be 'crc32:' and 8 hexadecimal digits, got {checksum!r}")
    config = config_from_state({"model_config": config_data}, str(path))
    try:   # meta tensors: shapes only, nothing allocated
        declared = {name: torch.empty(entry["shape"], dtype=getattr(torch, FLOAT_DTYPES[entry["dtype"]][0]),
                                      device="meta") for name, entry in header.items()}
    except Exception as exc:
        raise LyraError(f"{path}: damaged safetensors header (a tensor shape torch cannot hold: {first_line(exc)})") from None
    check_components_installed(config, providers, str(path))   # which package to install, if one is missing
    check_weights(config, declared, str(path))      # nothing allocated yet
    try:
        weights = load_file(str(path), device="cpu")
    except Exception as exc:
        raise LyraError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    if weights.keys() != declared.keys() or any(
            weights[k].shape != declared[k].shape for k in weights):   # what was read is what was checked
        raise LyraError(f"{path}: damaged safetensors file (its tensors changed while it was read)")
    check_intact({"model": weights, "checksums": {"model": checksum} if checksum else {}}, str(path), "model export")
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": config_data,
        "model": weights,
        "providers": providers,
        "fingerprints": {"model": fingerprint},
        "export_weights": metadata["weights"],
        **({"latent_stats": _json_table(metadata["latent_stats"], "latent_stats", path)}
           if "latent_stats" in metadata else {}),     # `lyra export --latent-stats`
    }


def _no_constant(name: str) -> Any:
    """`json.loads`'s parse_constant: NaN and Infinity are not JSON, and no Lyra value."""
    raise ValueError(f"{name} is not a JSON number")


def _json_table(text: str, key: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:   # also integers of thousands of digits (Python's own limit, its hint cut)
        raise LyraError(f"{path}: metadata '{key}' is not JSON ({first_line(exc).split(';')[0]})") from None
    except RecursionError:
        raise LyraError(f"{path}: metadata '{key}' is not a model's JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise LyraError(f"{path}: metadata '{key}' must be a JSON object")
    return value
