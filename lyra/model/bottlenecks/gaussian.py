"""``vae``: the Gaussian posterior, the default bottleneck (the design document's VAE).

The encoder's head gives 2D channels, split into the posterior's mean and its spread:

    h [B, 2D, F] -> mean, logvar [B, D, F]     logvar clamped to +-logvar_clamp, or
                                               2 log(softplus(s) + 1e-4) with posterior = "softplus"
    training:   z = mean + exp(logvar / 2) * noise      (noise: one N(0, 1) draw per example seed)
    validation: z = mean;  files store the mean;  decode is the identity

Its loss term is the KL divergence to N(0, 1). It has no weights, so the default model's
parameters (and every checkpoint written before bottlenecks were components) are unchanged.
Its two options are the model config's own keys ``posterior`` and ``logvar_clamp``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch.nn import functional as F

from lyra import registry
from lyra.model.bottlenecks.bottleneck import Bottleneck, Quantized

SOFTPLUS_FLOOR = 1e-4  # the smallest sigma of the "softplus" posterior


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over every element (not summed), in float32."""
    mean, logvar = mean.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mean.square() - logvar.exp())


def posterior_noise(seeds: torch.Tensor, latent_dim: int, frames: int) -> torch.Tensor:
    """One standard-normal draw [D, F] per seed: [B] int64 -> [B, D, F] float32 (on the CPU)."""
    return torch.stack([
        torch.randn(latent_dim, frames, generator=torch.Generator().manual_seed(int(s))) for s in seeds
    ])


@registry.register("bottleneck", "vae", streamable=True)
class Gaussian(Bottleneck):
    """The Gaussian posterior (see the module docstring)."""

    TERMS = ("kl",)

    def __init__(self, latent_dim: int, posterior: str = "logvar", logvar_clamp: float = 10.0) -> None:
        super().__init__()
        self.in_channels, self.latent_dim = 2 * latent_dim, latent_dim
        self.posterior, self.logvar_clamp = posterior, logvar_clamp

    def posterior_of(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 2D, F] -> (mean, logvar), each [B, D, F]."""
        mean, spread = rearrange(h, "b (two d) f -> two b d f", two=2)   # [B, 2D, F] -> 2 x [B, D, F]
        if self.posterior == "softplus":   # stable-audio-tools: sigma = softplus(s) + 1e-4
            return mean, 2 * torch.log(F.softplus(spread) + SOFTPLUS_FLOOR)
        return mean, spread.clamp(-self.logvar_clamp, self.logvar_clamp)

    def noise(self, seeds: torch.Tensor, frames: int) -> torch.Tensor:
        return posterior_noise(seeds, self.latent_dim, frames)

    def forward(self, h: torch.Tensor, noise: torch.Tensor | None = None) -> Quantized:
        mean, logvar = self.posterior_of(h)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise.to(mean.dtype)
        return Quantized(z, {"kl": kl_divergence(mean, logvar)}, None, {})

    def encode(self, h: torch.Tensor, quantizers: int | None = None) -> torch.Tensor:
        self.check_quantizers(quantizers)
        return self.posterior_of(h)[0]                                     # [B, 2D, F] -> [B, D, F]

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        return stored
