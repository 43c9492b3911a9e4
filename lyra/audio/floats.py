"""Float latents at a storage dtype: how a `.lyra` file stores [D, n] float latents (float16,
bfloat16, float32, or int8 with a float32 scale per frame), and what it gives back. Frame-major
bytes, little-endian; the encodings: docs/lyra-format.md.

    data = pack(latents, "float16")                 # [D, n] -> bytes
    latents = unpack(data, "float16", n, D)         # bytes -> [D, n] float32
"""

from __future__ import annotations

import numpy as np
import torch

from lyra.core.errors import LyraError

DTYPES = {"float16": 16, "bfloat16": 16, "float32": 32, "int8": 8}   # bits per stored float value


def check_dtype(dtype: str, key: str = "--dtype") -> None:
    """Refuse (one line starting with `key`) a latent storage name that is not in `DTYPES`."""
    if dtype not in DTYPES:
        raise LyraError(f"{key}: expected one of {', '.join(DTYPES)}, got {dtype!r}")


def frame_bytes(dtype: str, latent_dim: int) -> int:
    return latent_dim * DTYPES[dtype] // 8 + (4 if dtype == "int8" else 0)


def pack(latents: torch.Tensor, dtype: str) -> bytes:
    """[D, n] float latents -> the bytes of a DATA payload after its frame count."""
    frames = latents.detach().float().cpu().T.contiguous()                 # [D, n] -> [n, D]
    if not torch.isfinite(frames).all():
        raise LyraError("latent values are not finite (NaN or infinity): the model or its input is broken")
    if dtype == "int8":
        scale = frames.abs().amax(dim=1) / 127                              # [n]
        q = torch.where(scale[:, None] > 0, frames / scale.clamp_min(1e-30)[:, None], 0.0)
        q = q.round().clamp(-127, 127).to(torch.int8)                       # [n, D]
        return scale.numpy().astype("<f4").tobytes() + q.numpy().tobytes()
    if dtype == "float32":
        return frames.numpy().astype("<f4").tobytes()
    if dtype == "float16":
        stored = frames.half()
        if not torch.isfinite(stored).all():
            peak = frames.abs().max().item()
            raise LyraError(f"latent values exceed the float16 range (max |z| = {peak:.3g}); "
                            "use --dtype bfloat16 or float32")
        return stored.numpy().astype("<f2").tobytes()
    return frames.bfloat16().view(torch.int16).numpy().astype("<i2").tobytes()   # bfloat16


def unpack(data: bytes, dtype: str, frames: int, latent_dim: int) -> torch.Tensor:
    """Inverse of `pack`: payload bytes -> [D, frames] float32."""
    if dtype == "int8":
        scale = np.frombuffer(data, "<f4", frames)                          # [n]
        q = np.frombuffer(data, np.int8, frames * latent_dim, offset=4 * frames).reshape(frames, latent_dim)
        values = torch.from_numpy(q.astype(np.float32) * scale[:, None].astype(np.float32))
    elif dtype == "float32":
        values = torch.from_numpy(np.frombuffer(data, "<f4").astype(np.float32).reshape(frames, latent_dim))
    elif dtype == "float16":
        values = torch.from_numpy(np.frombuffer(data, "<f2").astype(np.float32).reshape(frames, latent_dim))
    else:
        bits = torch.from_numpy(np.frombuffer(data, "<i2").astype(np.int16).reshape(frames, latent_dim))
        values = bits.view(torch.bfloat16).float()
    return values.T.contiguous()                                            # [n, D] -> [D, n]


def stored(latents: torch.Tensor, dtype: str) -> torch.Tensor:
    """The latents as a `.lyra` file of `dtype` gives them back ([D, n] float32)."""
    return unpack(pack(latents, dtype), dtype, latents.shape[-1], latents.shape[0])
