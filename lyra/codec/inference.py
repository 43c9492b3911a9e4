"""Getting a model ready to encode and decode (device, precision and compilation:
`prepare_model`), and running it, in one place (`encode_latents`, `encode_mean`,
`decode_latents`: any input moved to the model's device and dtype, run under
`torch.inference_mode`, float32 latents or int64 codes on the CPU out, whatever the model
computes in).

    model = prepare_model(load_model("m.pt"), device="auto", precision="fp32", compile=True)
    mean = encode_mean(model, audio)             # [B, C, T] -> [B, D, ceil(T / hop)]
    audio = decode_latents(model, mean, T)       # [B, D, F] -> [B, C, T]

See docs/python-api.md (and docs/codec.md for --device, --precision and --compile).
"""

from __future__ import annotations

import warnings

import torch

from lyra.core.devices import native_precision, precision_dtype, resolve_device
from lyra.model.vae import VAE


def prepare_model(model: VAE, *, device: str | torch.device = "cpu", precision: str = "fp32",
                  compile: bool = False, freeze: bool = False) -> VAE:
    """`model` moved to `device` (auto: CUDA when available; cpu, cuda, cuda:N), cast to
    `precision` (fp32, bf16 or fp16: the dtype it computes in; Snake computes in float32
    whatever the dtype), in eval mode without gradients: inference only. With `compile`,
    `VAE.compile` with a dynamic time axis (files of any length and streamed segments of any
    size share one graph per stage); `freeze` lets inductor treat the weights as constants.
    Reduced precision where the hardware only emulates it (no CUDA, no AVX-512 BF16/AMX) is
    much slower than fp32: a `RuntimeWarning` says so."""
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


def encode_latents(model: VAE, audio: torch.Tensor, quantizers: int | None = None) -> torch.Tensor:
    """What a .lyra file stores for `audio` [B, C, T] (any device, float): the posterior mean
    [B, D, F] float32 (vae), or integer codes [B, Q, F] int64 (a discrete bottleneck; the first
    `quantizers` rows of a residual one), on the CPU."""
    device, dtype = model_device_dtype(model)
    with torch.inference_mode():
        stored = model.encode_latents(audio.to(device=device, dtype=dtype), quantizers)   # [B, C, T] -> [B, D|Q, F]
    return stored.cpu() if model.discrete else stored.float().cpu()


def decode_latents(model: VAE, latents: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Audio from what `encode_latents` gives: [B, D, F] float latents, or [B, Q, F] integer codes
    of a discrete model (any device) -> [B, C, length or F * hop] float32 on the CPU."""
    device, dtype = model_device_dtype(model)
    stored = latents.to(device=device) if model.discrete else latents.to(device=device, dtype=dtype)   # codes stay int
    with torch.inference_mode():
        audio = model.decode_latents(stored, length)                       # [B, D|Q, F] -> [B, C, T]
    return audio.float().cpu()
