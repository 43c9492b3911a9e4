"""The training forward pass, with the posterior noise handed in rather than drawn inside.

Each training example carries its own noise seed (see `lyra.train.data`), and its noise is
drawn from a generator seeded with it. So an example gets the same noise whichever process,
batch or batch position it lands in: data-parallel training on N processes equals one process
on the combined batch, and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import nn

from lyra.model.vae import VAE


def posterior_noise(seeds: torch.Tensor, latent_dim: int, frames: int) -> torch.Tensor:
    """One standard-normal draw [D, F] per seed: [B] int64 -> [B, D, F] float32 (on the CPU)."""
    return torch.stack([
        torch.randn(latent_dim, frames, generator=torch.Generator().manual_seed(int(s))) for s in seeds
    ])


class ReconstructionPass(nn.Module):
    """``(audio [B, C, T], noise [B, D, F]) -> (reconstruction [B, C, T], mean, logvar)``.

    Wraps the VAE so `DistributedDataParallel` sees the whole pass as one forward call.
    """

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, audio: torch.Tensor, noise: torch.Tensor):
        mean, logvar = self.vae.encode(audio)                   # [B, C, T] -> 2 x [B, D, F]
        z = mean + torch.exp(0.5 * logvar) * noise.to(mean.dtype)  # VAE.sample's draw, with given noise
        return self.vae.decode(z, audio.shape[-1]), mean, logvar   # [B, D, F] -> [B, C, T]
