"""``fsq``: finite scalar quantisation (Mentzer et al., 2023, "Finite Scalar Quantization:
VQ-VAE Made Simple").

Each of d = len(levels) channels is bounded and rounded to one of its L_i levels; the d rounded
values of a group are one code, the mixed-radix number they spell (codebook size prod(L_i)):

    h [B, D, F] -> project_in (1x1 conv, unless D = G*d)       -> [B, G*d, F] -> [B, G, d, F]
      bound:    y = tanh(x + atanh(o / h)) * h - o,  h = (L - 1)(1 + 1e-3) / 2,  o = 0.5 for even L, else 0
      round:    q = round(y) (straight-through: the gradient of y passes),  q in -floor(L/2)..ceil(L/2)-1
      code:     c = sum_i (q_i + floor(L_i/2)) * prod_{j<i} L_j                  -> codes [B, G, F]
      vector:   q / floor(L/2)                                  -> [B, G*d, F] -> project_out -> z [B, D, F]

No loss terms, no codebook to learn: the levels are the codebook. All G groups decode together
(not residual). Options: ``levels`` (default 8, 5, 5, 5: 1,000 codes, 10 bits) and ``groups``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from einops import rearrange
from torch import nn

from lyra import registry
from lyra.audio.codes import MAX_CODEBOOK_SIZE, MAX_QUANTIZERS
from lyra.model.bottlenecks.bottleneck import Bottleneck, Quantized, code_counts, usage_metrics
from lyra.registry import OptionError

EPS = 1e-3   # keeps tanh's bound a little above the outermost level, so it is reached


@registry.register("bottleneck", "fsq", streamable=True)
class FSQ(Bottleneck):
    """Finite scalar quantisation (see the module docstring)."""

    discrete = True

    def __init__(self, latent_dim: int, levels: Sequence[int] = (8, 5, 5, 5), groups: int = 1) -> None:
        super().__init__()
        levels = tuple(levels) if isinstance(levels, (list, tuple)) else levels
        if not isinstance(levels, tuple) or not levels or not all(
                isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 2**12 for v in levels):
            raise OptionError("levels", f"must be a list of integers in 2..4096, got {levels!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or not 1 <= groups <= MAX_QUANTIZERS:
            raise OptionError("groups", f"must be an integer in 1..{MAX_QUANTIZERS}, got {groups!r}")
        if math.prod(levels) > MAX_CODEBOOK_SIZE:   # what a .lyra file can hold
            raise OptionError("levels", f"make {math.prod(levels):,} codes; at most {MAX_CODEBOOK_SIZE:,} (24 bits) "
                                        "are allowed")
        self.in_channels = self.latent_dim = latent_dim
        self.levels, self.groups = levels, groups
        self.num_quantizers, self.codebook_size = groups, math.prod(levels)
        width = groups * len(levels)
        self.project_in = nn.Identity() if width == latent_dim else nn.Conv1d(latent_dim, width, 1)
        self.project_out = nn.Identity() if width == latent_dim else nn.Conv1d(width, latent_dim, 1)
        # Follows the model's dtype through `.to()` (nothing stored): decoded vectors come back in it.
        self.register_buffer("_like", torch.zeros(0), persistent=False)

    def _levels(self, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The levels L as a [d, 1] tensor (constants: built from the options, never cast)."""
        return torch.tensor(self.levels, dtype=dtype, device=device)[:, None]

    def _basis(self, device: torch.device) -> torch.Tensor:
        """The mixed-radix place values prod_{j<i} L_j as a [d, 1] int64 tensor."""
        return torch.tensor((1, *self.levels[:-1]), dtype=torch.int64, device=device).cumprod(0)[:, None]

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d, F] float32 -> values in (-floor(L/2) - eps, ceil(L/2) - 1 + eps) per channel."""
        levels = self._levels(x.device)
        half = (levels - 1) * (1 + EPS) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        return torch.tanh(x + torch.atanh(offset / half)) * half - offset

    def _rounded(self, h: torch.Tensor) -> torch.Tensor:
        """[B, D, F] -> the rounded levels q [B, G, d, F] (float32, straight-through)."""
        x = rearrange(self.project_in(h).float(), "b (g d) f -> b g d f", g=self.groups)   # [B, D, F] -> [B, G, d, F]
        y = self.bound(x)
        return y + (torch.round(y) - y).detach()

    def _codes(self, q: torch.Tensor) -> torch.Tensor:
        """[B, G, d, F] rounded levels -> [B, G, F] int64 codes (exact integer arithmetic)."""
        levels = self._levels(q.device, torch.int64)
        digits = q.detach().round().long() + torch.div(levels, 2, rounding_mode="floor")    # 0..L-1
        return (digits * self._basis(q.device)).sum(dim=2)

    def _vectors(self, q: torch.Tensor) -> torch.Tensor:
        """[B, G, d, F] rounded levels (float32) -> z [B, D, F] in the model's dtype."""
        scaled = q / torch.div(self._levels(q.device), 2, rounding_mode="floor")          # in [-1, 1)
        flat = rearrange(scaled, "b g d f -> b (g d) f").to(self._like.dtype)               # [B, G*d, F]
        return self.project_out(flat)                                                       # -> [B, D, F]

    def forward(self, h: torch.Tensor, noise: torch.Tensor | None = None) -> Quantized:
        q = self._rounded(h)
        codes = self._codes(q)                                                             # [B, G, F]
        return Quantized(self._vectors(q), {}, codes, {"counts": code_counts(codes, self.codebook_size)})

    def encode(self, h: torch.Tensor, quantizers: int | None = None) -> torch.Tensor:
        self.check_quantizers(quantizers)
        return self._codes(self._rounded(h))                                               # [B, D, F] -> [B, G, F]

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        codes = stored.long()[:, :, None, :]                                               # [B, G, F] -> [B, G, 1, F]
        levels = self._levels(codes.device, torch.int64)
        digits = torch.div(codes, self._basis(codes.device), rounding_mode="floor") % levels   # [B, G, d, F]
        q = (digits - torch.div(levels, 2, rounding_mode="floor")).float()
        return self._vectors(q)

    def update(self, stats: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        return usage_metrics(stats["counts"])

