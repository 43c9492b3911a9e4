"""stable-audio-tools' own Oobleck VAE, as the reference `lyra import stable-audio-tools` is held to.

Used by tests/test_import_sat.py (equivalence) and tools/sat_bench.py (speed). The release is
the one the Makefile installs (with --no-deps). Its autoencoder module imports, at top level,
modules that play no part in the VAE and need gigabytes of dependencies (diffusion models,
samplers, the pretrained-model downloader); `load` stands in for those four before importing
it. Everything the VAE runs -- `OobleckEncoder`, `OobleckDecoder`, `SnakeBeta`,
`VAEBottleneck`, weight norm, the factory -- is stable-audio-tools' real code.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch
from torch import nn

STANDINS = {
    "stable_audio_tools.models.pretrained": ["get_pretrained_model"],
    "stable_audio_tools.inference.sampling": ["sample"],
    "stable_audio_tools.inference.utils": ["prepare_audio"],
    "stable_audio_tools.models.diffusion": ["ConditionedDiffusionModel", "DAU1DCondWrapper",
                                            "UNet1DCondWrapper", "DiTWrapper"],
}

# The autoencoder of Stable Audio Open 1.0's model_config.json (its "pretransform"), as published.
STABLE_AUDIO_OPEN_1_0: dict[str, Any] = {
    "model_type": "autoencoder", "sample_rate": 44100, "audio_channels": 2,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                                  "strides": [2, 4, 4, 8, 8], "latent_dim": 128, "use_snake": True}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                                  "strides": [2, 4, 4, 8, 8], "latent_dim": 64, "use_snake": True,
                                                  "final_tanh": False}},
        "bottleneck": {"type": "vae"}, "latent_dim": 64, "downsampling_ratio": 2048, "io_channels": 2,
    },
}


def load() -> types.ModuleType:
    """`stable_audio_tools.models.autoencoders`, with the unrelated modules stood in for."""
    for name, attrs in STANDINS.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update({a: type(a, (), {}) for a in attrs})
            sys.modules[name] = module
    from stable_audio_tools.models import autoencoders

    return autoencoders


def config(channels: int, c_mults: list[int], strides: list[int], latent_dim: int,
           final_tanh: bool = False, **decoder: Any) -> dict[str, Any]:
    """A stable-audio-tools autoencoder config (model_config.json's shape) of any size."""
    def part(**extra: Any) -> dict[str, Any]:
        return {"type": "oobleck", "config": {"channels": channels, "c_mults": list(c_mults),
                                              "strides": list(strides), "use_snake": True, **extra}}
    hop = 1
    for s in strides:
        hop *= s
    return {
        "model_type": "autoencoder", "sample_rate": 44100, "audio_channels": 2,
        "model": {
            "encoder": part(in_channels=2, latent_dim=2 * latent_dim),
            "decoder": part(out_channels=2, latent_dim=latent_dim, final_tanh=final_tanh, **decoder),
            "bottleneck": {"type": "vae"}, "latent_dim": latent_dim, "downsampling_ratio": hop, "io_channels": 2,
        },
    }


def build(autoencoders: types.ModuleType, cfg: dict[str, Any], seed: int) -> nn.Module:
    """stable-audio-tools' AudioAutoencoder from its own factory, in eval mode, every weight
    random: weight norm's magnitude drawn independently of its direction, Snake's log-scale
    parameters off their all-zero start, scaled so activations stay O(1)."""
    torch.manual_seed(seed)
    model = autoencoders.create_autoencoder_from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.normal_(0.0, 0.4)
            elif name.endswith("weight_g"):
                p.uniform_(0.3, 0.8)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model


def outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """stable-audio-tools' (posterior mean, sigma, decode(mean)) for audio x [B, 2, T]."""
    with torch.no_grad():
        mean, scale = model.encoder(x).chunk(2, dim=1)          # as VAEBottleneck.encode splits it
        sigma = nn.functional.softplus(scale) + 1e-4             # as vae_sample computes it
        return mean, sigma, model.decoder(mean)
