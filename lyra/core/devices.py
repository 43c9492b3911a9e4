"""Devices and precisions: the one place a device name or a precision name becomes torch's.

    device = resolve_device("auto")                       # CUDA when available, else the CPU
    device = resolve_device("auto", local_rank=3)         # under torchrun: this process's GPU
    dtype = precision_dtype("bf16", device)               # "auto": bf16 on a GPU that has it

A bad name, or a GPU asked for where there is none, is a one-line `LyraError` that starts with
the option or config key the user set (``--device``, ``runtime.device``).
"""

from __future__ import annotations

import torch

from lyra.core.errors import LyraError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device, *, local_rank: int | None = None,
                   key: str = "--device") -> torch.device:
    """``auto`` -> CUDA if available, else the CPU. With `local_rank` (a torchrun process),
    ``auto`` and a bare ``cuda`` mean this process's GPU, ``cuda:LOCAL_RANK``."""
    name = str(device)
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LyraError(f"{key}: not a device: {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LyraError(f"{key} {device}: CUDA is not available on this machine")
    return dev


def precision_dtype(precision: str, device: torch.device | None = None, *, key: str = "--precision") -> torch.dtype:
    """The dtype of ``fp32``, ``bf16`` or ``fp16``; ``auto`` (with a `device`): bf16 on a GPU
    that supports it, else fp32."""
    if precision == "auto" and device is not None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise LyraError(f"{key}: expected one of {', '.join(PRECISIONS)}, got {precision!r}") from None


def native_precision(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `device` computes convolutions in `dtype` natively (not emulated)."""
    if dtype == torch.float32 or device.type == "cuda":
        return True
    if device.type == "cpu" and dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if device.type == "cpu" and dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False
