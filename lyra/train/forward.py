"""The training forward pass, with the bottleneck's randomness handed in rather than drawn inside.

Each training example carries its own noise seed (see `lyra.train.data`), and its randomness
(the ``vae`` posterior's noise, an ``rvq``'s quantiser dropout) is a pure function of that seed
(`Bottleneck.noise`). So an example gets the same randomness whichever process, batch or batch
position it lands in: data-parallel training on N processes equals one process on the combined
batch, and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import nn

from lyra.model.bottlenecks.bottleneck import Quantized
from lyra.model.vae import VAE


class ReconstructionPass(nn.Module):
    """``(audio [B, C, T], noise [B, ...]) -> (reconstruction [B, C, T], Quantized)``.

    Wraps the model so `DistributedDataParallel` sees the whole pass as one forward call.
    """

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, audio: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        return self.vae.reconstruct(audio, noise)   # [B, C, T] -> [B, H, F] -> z [B, D, F] -> [B, C, T]
