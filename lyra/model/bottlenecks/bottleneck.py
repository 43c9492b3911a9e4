"""The bottleneck contract: what the encoder's head gives a bottleneck, and what it gives back.

A bottleneck is a component of kind ``bottleneck`` built with ``latent_dim`` (the decoder's
input channels) and its options (``[model.options.<name>]``). It is an `nn.Module` subclass of
`Bottleneck` and says, as attributes:

- ``in_channels``: the channels the encoder's head must give it;
- ``latent_dim``: the channels it gives the decoder;
- ``discrete``: whether files store integer codes (True) or float latents (False); and, when
  discrete, ``num_quantizers`` (Q, code rows per frame), ``codebook_size`` (K, codes are
  0..K-1) and ``residual`` (whether the first N < Q rows alone decode: variable bitrate).

It acts on each latent frame alone (nothing mixes time), so streamed and whole-file encoding
give the same codes. Its methods, for ``h [B, in_channels, F]``:

    out = bottleneck(h, noise)        # training/validation: a `Quantized` (z, loss terms, codes, stats)
    noise = bottleneck.noise(seeds, F)  # per-example randomness for that pass, [B, ...] on the CPU
    stored = bottleneck.encode(h, quantizers=None)   # what a .lyra file stores:
                                      #   float [B, latent_dim, F], or int64 codes [B, Q', F]
    z = bottleneck.decode(stored)     # [B, latent_dim, F] for the decoder
    metrics = bottleneck.update(stats, step)   # once per optimizer step, training only

``noise`` is a pure function of each example's seed, so an example gets the same randomness on
any process, in any batch (`lyra.train.forward`); ``noise=None`` is the deterministic pass
(validation). ``stats`` are additive tensors the pass returns (e.g. code counts): the training
step sums them over its micro-batches and processes, then hands the sums to `update` once, which
applies what depends on them (EMA codebooks, dead-code replacement) identically on every process
and returns what to log. A step that is dropped (a stop between micro-batches) never calls it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from lyra.audio.codes import MAX_CODEBOOK_SIZE, MAX_QUANTIZERS, bits_per_code
from lyra.core.errors import LyraError


class Quantized(NamedTuple):
    """A bottleneck's training pass over ``h [B, in_channels, F]``."""

    z: torch.Tensor                    # [B, latent_dim, F]: what the decoder gets (straight-through if discrete)
    terms: dict[str, torch.Tensor]     # unweighted loss terms, 0-d float32: "kl" | "commitment", "codebook"
    codes: torch.Tensor | None         # [B, Q, F] int64 (discrete), else None
    stats: dict[str, torch.Tensor]     # additive statistics for `Bottleneck.update` (may be empty)


class Bottleneck(nn.Module):
    """Base class of every bottleneck (see the module docstring for the contract)."""

    in_channels: int
    latent_dim: int
    discrete: bool = False
    num_quantizers: int = 0
    codebook_size: int = 0
    residual: bool = False
    frozen: bool = False   # set by `lyra train --freeze-encoder`: no weight or EMA update, codes keep their meaning
    # The loss terms its pass returns, by name: the training config weighs each (`lyra.train`).
    TERMS: tuple[str, ...] = ()

    @property
    def bits_per_code(self) -> int:
        """ceil(log2 codebook_size): what a .lyra file packs each code into (0: float latents)."""
        return bits_per_code(self.codebook_size) if self.discrete else 0

    def noise(self, seeds: torch.Tensor, frames: int) -> torch.Tensor:
        """Per-example randomness of a training pass: [B] int64 seeds -> [B, ...] on the CPU
        (here none: [B, 0])."""
        return torch.zeros(len(seeds), 0)

    def forward(self, h: torch.Tensor, noise: torch.Tensor | None = None) -> Quantized:
        raise NotImplementedError

    def encode(self, h: torch.Tensor, quantizers: int | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, stats: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """Apply the step's summed `stats` (see the module docstring); what to log. Default: nothing."""
        return {}

    def decodes(self, rows: int) -> bool:
        """Whether `rows` code rows per frame decode: all of them, or (residual) the first 1..Q."""
        return rows == self.num_quantizers or (self.residual and 1 <= rows <= self.num_quantizers)

    def rows_it_decodes(self) -> str:
        """For messages: ``1..9`` (residual) or ``4``."""
        return f"1..{self.num_quantizers}" if self.residual else str(self.num_quantizers)

    def check_quantizers(self, quantizers: int | None) -> int:
        """How many code rows an encode with `quantizers` gives (all when None); a one-line
        `LyraError` when this bottleneck cannot give that many."""
        if quantizers is None:
            return self.num_quantizers
        if not self.discrete:
            raise LyraError("--quantizers: this model's bottleneck stores continuous latents, not codes")
        q = int(quantizers)
        if self.decodes(q):
            return q
        if not self.residual:
            raise LyraError(f"--quantizers: this model's bottleneck is not residual: it decodes all "
                            f"{self.num_quantizers} code rows or none, got {q}")
        raise LyraError(f"--quantizers: must be in 1..{self.num_quantizers} (the quantisers this model has), got {q}")

    def check_codes(self, codes: torch.Tensor) -> None:
        """Codes a `decode` can take: int [B, Q', F] with Q' rows this model decodes, values 0..K-1."""
        if codes.dim() != 3 or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise LyraError(f"decode expects integer codes of shape [batch, quantizers, frames], "
                            f"got a {codes.dtype} tensor of shape {list(codes.shape)}")
        rows = codes.shape[1]
        if not self.decodes(rows):
            raise LyraError(f"decode: codes have {rows} rows; this model decodes {self.rows_it_decodes()}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise LyraError(f"decode: codes must be in 0..{self.codebook_size - 1}, got values "
                            f"{int(codes.min())}..{int(codes.max())}")


def bottleneck_facts(bottleneck: nn.Module) -> str | None:
    """Why a built bottleneck breaks the contract (one line), or None when it keeps it."""
    if not isinstance(bottleneck, Bottleneck):
        return f"built a {type(bottleneck).__name__}, which is not a lyra.model.bottlenecks.bottleneck.Bottleneck"
    for key in ("in_channels", "latent_dim"):
        value = getattr(bottleneck, key, None)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return f"its {key} must be a positive integer, got {value!r}"
    if bottleneck.discrete:
        for key in ("num_quantizers", "codebook_size"):
            value = getattr(bottleneck, key, None)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                return f"it is discrete, so its {key} must be a positive integer, got {value!r}"
        if not 2 <= bottleneck.codebook_size <= MAX_CODEBOOK_SIZE:   # what a .lyra file can hold
            return f"its codebook_size must be in 2..{MAX_CODEBOOK_SIZE}, got {bottleneck.codebook_size}"
        if bottleneck.num_quantizers > MAX_QUANTIZERS:
            return f"its num_quantizers must be at most {MAX_QUANTIZERS}, got {bottleneck.num_quantizers}"
    return None


def code_counts(codes: torch.Tensor, size: int) -> torch.Tensor:
    """How often each code occurs in each row: [B, Q, F] int64 -> [Q, K] float64 (static shapes,
    so it compiles without a graph break). The usual ``stats["counts"]`` of a discrete pass."""
    rows = codes.shape[1]
    flat = (codes + size * torch.arange(rows, device=codes.device)[None, :, None]).reshape(-1)  # [B*Q*F]
    return torch.zeros(rows * size, dtype=torch.float64, device=codes.device).scatter_add_(
        0, flat, torch.ones_like(flat, dtype=torch.float64)).view(rows, size)       # [Q*K] -> [Q, K]


def usage_metrics(counts: torch.Tensor) -> dict[str, float]:
    """Per code row q: ``perplexity_q{q}`` (exp of the entropy of its code frequencies: K when
    every code is used equally, 1 when one code is) and ``usage_q{q}`` (the fraction of its K
    codes used at least once), from a step's summed counts [Q, K]. A row no example used this
    step (every example dropped that quantiser) logs 0 for both."""
    out = {}
    for q, row in enumerate(counts.double()):
        total = float(row.sum())
        if total <= 0:
            out[f"perplexity_q{q}"] = out[f"usage_q{q}"] = 0.0
            continue
        p = row[row > 0] / total
        out[f"perplexity_q{q}"] = float(torch.exp(-(p * p.log()).sum()))
        out[f"usage_q{q}"] = float((row > 0).double().mean())
    return out
