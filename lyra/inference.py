"""Getting a model ready to encode and decode: device, precision and compilation, in one place.

    model = prepare_model(load_model("m.pt"), device="auto", precision="fp32", compile=True)

- ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``;
- ``precision``: the dtype the weights are cast to and the model computes in (inputs are cast
  to it, outputs come back as float32 from the codec): ``fp32``, ``bf16`` or ``fp16``. Snake
  computes in float32 internally whatever the dtype. Reduced precision pays off where the
  hardware has it (CUDA; CPUs with AVX-512 BF16 or AMX); elsewhere oneDNN emulates it and it
  is much slower than fp32, so `prepare_model` warns;
- ``compile``: `VAE.compile` with a dynamic time axis from the first call, so files of any
  length and streamed segments of any size share one graph per stage;
- ``freeze``: with ``compile``, let inductor treat the weights as constants.

The model comes back in eval mode with gradients off: inference only.

Running it is also here, once: `encode_mean` and `decode_latents` move any float tensor to
the model's device and dtype, run it under `torch.inference_mode`, and return float32 on the
CPU, whatever precision and device the model computes in:

    mean = encode_mean(model, audio)             # [B, C, T] -> [B, D, ceil(T / hop)]
    audio = decode_latents(model, mean, T)       # [B, D, F] -> [B, C, T]
"""

from __future__ import annotations

import warnings

import torch

from lyra.errors import LyraError
from lyra.model import VAE

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA if available else CPU; a bad name or a missing GPU is a one-line error."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LyraError(f"--device: not a device: {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LyraError(f"--device {device}: CUDA is not available on this machine")
    return dev


def precision_dtype(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise LyraError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}") from None


def native_precision(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `device` computes convolutions in `dtype` natively (not emulated)."""
    if dtype == torch.float32 or device.type == "cuda":
        return True
    if device.type == "cpu" and dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if device.type == "cpu" and dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


def prepare_model(model: VAE, *, device: str | torch.device = "cpu", precision: str = "fp32",
                  compile: bool = False, freeze: bool = False) -> VAE:
    """`model` moved, cast, in eval mode without gradients, and compiled if asked (see module doc)."""
    dev, dtype = resolve_device(device), precision_dtype(precision)
    if not native_precision(dev, dtype):
        warnings.warn(f"{precision} on this {dev.type} is emulated (no native {precision} convolutions): "
                      f"expect it to be much slower than fp32", RuntimeWarning, stacklevel=2)
    model = model.to(device=dev, dtype=dtype).eval().requires_grad_(False)
    if compile:
        model.compile(dynamic=True, freeze=freeze)
    return model


def model_device_dtype(model: VAE) -> tuple[torch.device, torch.dtype]:
    """Where the model's weights live and their dtype: what its inputs must be moved to."""
    param = next(model.parameters())
    return param.device, param.dtype


def encode_mean(model: VAE, audio: torch.Tensor) -> torch.Tensor:
    """The posterior mean of `audio`: [B, C, T] (any device, float) -> [B, D, F] float32 on the CPU."""
    device, dtype = model_device_dtype(model)
    with torch.inference_mode():
        mean, _ = model.encode(audio.to(device=device, dtype=dtype))      # [B, C, T] -> [B, D, F]
    return mean.float().cpu()


def decode_latents(model: VAE, latents: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Audio from latents: [B, D, F] (any device, float) -> [B, C, length or F * hop] float32 on the CPU."""
    device, dtype = model_device_dtype(model)
    with torch.inference_mode():
        audio = model.decode(latents.to(device=device, dtype=dtype), length)   # [B, D, F] -> [B, C, T]
    return audio.float().cpu()
