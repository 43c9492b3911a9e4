"""``rvq``: residual vector quantisation, as descript-audio-codec (DAC 1.0.0) does it.

Q quantisers in a chain, each quantising what the ones before it left over. Quantiser i, with
a factorised low-dimensional codebook [K, d] (Improved VQGAN: look codes up in d << D
dimensions, by cosine):

    residual_0 = h                                          h [B, D, F]
    z_e  = in_proj(residual_i)                              [B, D, F] -> [B, d, F]   (1x1 conv, bias)
    code = argmin_k | z_e/|z_e| - c_k/|c_k| |^2             [B, F]  (l2-normalised lookup)
    z_q  = c_code                                           [B, d, F]  (the row itself, not normalised)
    out  = out_proj(z_e + (z_q - z_e).detach())             [B, d, F] -> [B, D, F]   (straight-through)
    residual_{i+1} = residual_i - out;   z = sum_i out_i * active_i

Loss terms (unweighted; the training config weighs them), exactly DAC's, dropout mask included:
``commitment`` = sum_i mean_b(active_bi * mean_{d,F} (z_e - sg(z_q))^2) and ``codebook`` = the
same with the stop-gradient on z_e (only with ``codebook_update = "loss"``).

Quantiser dropout (variable bitrate): with ``quantizer_dropout = p`` an example is trained with
its first n ~ U{1..Q} quantisers with probability p, else with all Q. DAC draws that for the
first floor(pB) examples of a batch; here each example draws it from its own seed
(`RVQ.noise`), so the same example gets the same n on any process and in any batch position.

``codebook_update = "ema"`` trains the codebooks without gradients, as encodec and SoundStream
do: each row is an exponential moving average (``ema_decay``) of the vectors z_e assigned to it,
with Laplace smoothing (eps 1e-5) of the counts. The pass returns the statistics: ``counts``
[Q, K] of the active quantisers (always: usage and dead codes) and with "ema" ``sums`` [Q, K, d]
of the vectors assigned to each code; `RVQ.update` applies them once per optimiser step, to the
step's sums over micro-batches and processes, identically on every process (a quantiser no
example used in the step is left alone). It also replaces dead codes (used fewer than
``dead_code_threshold`` times in the step): each takes the row of one of the most used codes
plus a small perturbation drawn from a generator seeded by (step, quantiser), so the two split
that code's cluster. ``init = "kmeans"`` sets the codebooks once from training features
(`RVQ.initialize`, `lyra.model.bottlenecks.kmeans`), quantiser by quantiser on the residuals.

Everything runs in float32 whatever autocast or the weights' dtype says (z is handed to the
decoder in the weights' dtype: bf16 in a model cast for inference), and the pass, `encode` and
`decode` compile with ``fullgraph=True`` (dropped quantisers are masked, never skipped). State-dict names are
DAC's, less its weight norm: ``quantizers.{i}.in_proj.weight``, ``.bias``, ``out_proj.*``,
``codebook.weight`` [K, d]; with "ema" also ``cluster_size`` [K] and ``embed_avg`` [K, d]; with
"kmeans" a ``kmeans_initialized`` flag (0. or 1.; the `RVQ.initialized` property).
"""

from __future__ import annotations

import math
import numbers

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from lyra import registry
from lyra.model.bottlenecks.bottleneck import Bottleneck, Quantized, usage_metrics
from lyra.model.bottlenecks.kmeans import kmeans, nearest_codes
from lyra.registry import OptionError

LAPLACE_EPS = 1e-5      # encodec's smoothing of the EMA counts
SPLIT_SCALE = 1e-2      # a replaced dead code: a used row plus noise of this size relative to the row's rms


class VectorQuantize(nn.Module):
    """One quantiser of the chain: projections and codebook (DAC's names, plain convolutions)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int, ema: bool) -> None:
        super().__init__()
        self.in_proj = nn.Conv1d(dim, codebook_dim, 1)
        self.out_proj = nn.Conv1d(codebook_dim, dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)      # N(0, 1) rows, as DAC's
        if ema:
            self.codebook.weight.requires_grad_(False)                 # trained by `RVQ.update`
            # A consistent start: embed = embed_avg / cluster_size with every count 1.
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embed_avg", self.codebook.weight.detach().clone())

    def project(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """A projection in float32, whatever the weights' dtype (a model cast to bf16 for inference)."""
        return F.conv1d(x, conv.weight.float(), conv.bias.float())

    def rows(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, F] codes -> their codebook rows [B, d, F], float32."""
        return F.embedding(codes, self.codebook.weight.float()).transpose(1, 2)

    def quantize(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, D, F] float32 -> (z_e [B, d, F], z_q [B, d, F], codes [B, F], out [B, D, F])."""
        z_e = self.project(self.in_proj, residual)                                 # [B, D, F] -> [B, d, F]
        flat = rearrange(z_e.detach(), "b d f -> (b f) d")                         # [B*F, d]
        book = self.codebook.weight.detach().float()
        codes = rearrange(nearest_codes(flat, book), "(b f) -> b f", b=z_e.shape[0])   # [B*F] -> [B, F]
        z_q = self.rows(codes)                                                     # [B, d, F]
        out = self.project(self.out_proj, z_e + (z_q - z_e).detach())             # straight-through, [B, D, F]
        return z_e, z_q, codes, out

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, F] codes -> out_proj(codebook rows) [B, D, F] (DAC's ``from_codes``), float32."""
        return self.project(self.out_proj, self.rows(codes))


def _integer(key: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise OptionError(key, f"must be an integer in {low}..{high}, got {value!r}")
    return value


def _real(key: str, value: object, low: float, high: float, *, open_high: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low <= value < high if open_high else low <= value <= high):
        bound = f"[{low}, {high})" if open_high else f"[{low}, {high}]"
        raise OptionError(key, f"must be a number in {bound}, got {value!r}")
    return float(value)


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return str(value)


@registry.register("bottleneck", "rvq", streamable=True)
class RVQ(Bottleneck):
    """Residual vector quantisation (see the module docstring)."""

    discrete = True
    residual = True
    TERMS = ("commitment", "codebook")   # the instance's: without "codebook" when codebook_update = "ema"

    def __init__(self, latent_dim: int, num_quantizers: int = 9, codebook_size: int = 1024,
                 codebook_dim: int = 8, quantizer_dropout: float = 0.0, codebook_update: str = "loss",
                 ema_decay: float = 0.99, init: str = "random", kmeans_iters: int = 10,
                 dead_code_threshold: float = 0.0) -> None:
        super().__init__()
        self.num_quantizers = _integer("num_quantizers", num_quantizers, 1, 64)
        self.codebook_size = _integer("codebook_size", codebook_size, 2, 2**16)
        self.codebook_dim = _integer("codebook_dim", codebook_dim, 1, 4096)
        self.quantizer_dropout = _real("quantizer_dropout", quantizer_dropout, 0.0, 1.0)
        self.codebook_update = _choice("codebook_update", codebook_update, ("loss", "ema"))
        self.ema_decay = _real("ema_decay", ema_decay, 0.0, 1.0, open_high=True)
        self.init = _choice("init", init, ("random", "kmeans"))
        self.kmeans_iters = _integer("kmeans_iters", kmeans_iters, 1, 1000)
        self.dead_code_threshold = _real("dead_code_threshold", dead_code_threshold, 0.0, 2.0**40)
        self.in_channels = self.latent_dim = latent_dim
        self.TERMS = ("commitment",) if self.ema else ("commitment", "codebook")
        self.quantizers = nn.ModuleList(
            VectorQuantize(latent_dim, self.codebook_size, self.codebook_dim, self.ema)
            for _ in range(self.num_quantizers))
        if self.init == "kmeans":
            self.register_buffer("kmeans_initialized", torch.zeros(1))   # [1]: 1. once `initialize` has run

    @property
    def ema(self) -> bool:
        return self.codebook_update == "ema"

    @property
    def dtype(self) -> torch.dtype:
        """What z is handed to the decoder in: the weights' dtype (float32 but in a model cast
        for reduced-precision inference); everything inside runs in float32."""
        return self.quantizers[0].codebook.weight.dtype

    @property
    def initialized(self) -> bool:
        """Whether the codebooks are ready to train (k-means init: once `initialize` has run)."""
        flag = self._buffers.get("kmeans_initialized")
        return True if flag is None else bool(flag > 0)

    def noise(self, seeds: torch.Tensor, frames: int) -> torch.Tensor:
        """[B] int64 seeds -> [B] int64: how many quantisers each example trains with (the
        same for every frame, so `frames` plays no part)."""
        counts = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(int(seed))
            drop = float(torch.rand((), generator=generator, dtype=torch.float64)) < self.quantizer_dropout
            n = int(torch.randint(1, self.num_quantizers + 1, (), generator=generator))   # drawn either way
            counts.append(n if drop else self.num_quantizers)
        return torch.tensor(counts, dtype=torch.int64)

    def _run(self, h: torch.Tensor, active: torch.Tensor, rows: int):
        """The chain over the first `rows` quantisers: h [B, D, F], active [B, Q] bool ->
        (z [B, D, F], commitment, codebook, codes [B, rows, F], z_e [B, rows, d, F]), float32."""
        residual = h.float()
        z = torch.zeros_like(residual)
        commitment = codebook = residual.new_zeros(())
        codes, latents = [], []
        for i, vq in enumerate(self.quantizers[:rows]):
            z_e, z_q, idx, out = vq.quantize(residual)
            mask = active[:, i].float()                                             # [B]
            commitment = commitment + ((z_e - z_q.detach()).square().mean([1, 2]) * mask).mean()
            codebook = codebook + ((z_q - z_e.detach()).square().mean([1, 2]) * mask).mean()
            z = z + out * mask[:, None, None]
            residual = residual - out
            codes.append(idx)
            latents.append(z_e)
        return z, commitment, codebook, torch.stack(codes, 1), torch.stack(latents, 1)

    def _active(self, noise: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """[B] quantiser counts (None: all) -> [B, Q] bool, quantiser i active for example b."""
        rows = torch.arange(self.num_quantizers, device=device)
        if noise is None:
            return torch.ones(batch, self.num_quantizers, dtype=torch.bool, device=device)
        return rows[None, :] < noise.to(device).reshape(batch, 1)

    def forward(self, h: torch.Tensor, noise: torch.Tensor | None = None) -> Quantized:
        with torch.autocast(h.device.type, enabled=False):
            active = self._active(noise, h.shape[0], h.device)                     # [B, Q]
            z, commitment, codebook, codes, latents = self._run(h, active, self.num_quantizers)
            terms = {"commitment": commitment} if self.ema else {"commitment": commitment, "codebook": codebook}
            return Quantized(z.to(self.dtype), terms, codes, self._stats(codes, latents, active))

    def _stats(self, codes: torch.Tensor, latents: torch.Tensor, active: torch.Tensor) -> dict[str, torch.Tensor]:
        """Code counts [Q, K] of the active quantisers (and with "ema" the sums [Q, K, d] of the
        vectors assigned to each code), float64, from codes [B, Q, F] and z_e [B, Q, d, F]."""
        q, k = self.num_quantizers, self.codebook_size
        flat = (codes + k * torch.arange(q, device=codes.device)[None, :, None]).reshape(-1)   # [B*Q*F]
        weight = active[:, :, None].expand(codes.shape).reshape(-1).double()                   # [B*Q*F]
        counts = torch.zeros(q * k, dtype=torch.float64, device=codes.device).scatter_add_(0, flat, weight)
        stats = {"counts": counts.view(q, k)}
        if self.ema:
            vectors = rearrange(latents.detach(), "b q d f -> (b q f) d").double() * weight[:, None]
            sums = torch.zeros(q * k, self.codebook_dim, dtype=torch.float64, device=codes.device)
            stats["sums"] = sums.index_add_(0, flat, vectors).view(q, k, self.codebook_dim)
        return stats

    def encode(self, h: torch.Tensor, quantizers: int | None = None) -> torch.Tensor:
        rows = self.check_quantizers(quantizers)
        with torch.autocast(h.device.type, enabled=False):
            active = torch.ones(h.shape[0], rows, dtype=torch.bool, device=h.device)
            return self._run(h, active, rows)[3]                                   # [B, D, F] -> [B, rows, F]

    def decode(self, stored: torch.Tensor) -> torch.Tensor:
        """Codes [B, Q', F] (the first Q' quantisers) -> z [B, D, F], the sum of their vectors."""
        codes = stored.long()
        with torch.autocast(codes.device.type, enabled=False):
            z = self.quantizers[0].vectors(codes[:, 0])                            # [B, F] -> [B, D, F]
            for i in range(1, codes.shape[1]):
                z = z + self.quantizers[i].vectors(codes[:, i])
            return z.to(self.dtype)

    @torch.no_grad()
    def update(self, stats: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """The step's summed stats: EMA codebooks, dead-code replacement; usage to log."""
        counts = stats["counts"].double()
        metrics = usage_metrics(counts)
        for i, vq in enumerate(self.quantizers):
            device = vq.codebook.weight.device
            row = counts[i].to(device)
            if float(row.sum()) <= 0:       # no example used this quantiser this step
                continue
            if self.ema:
                self._ema(vq, row, stats["sums"][i].to(device))
            if self.dead_code_threshold > 0:
                metrics[f"replaced_q{i}"] = float(self._replace_dead(vq, row, step * self.num_quantizers + i))
        return metrics

    def _ema(self, vq: VectorQuantize, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """encodec's EuclideanCodebook update from counts [K] and sums [K, d]."""
        decay = self.ema_decay
        size = vq.cluster_size.double() * decay + counts * (1 - decay)
        avg = vq.embed_avg.double() * decay + sums * (1 - decay)
        total = size.sum()
        smoothed = (size + LAPLACE_EPS) / (total + self.codebook_size * LAPLACE_EPS) * total
        vq.cluster_size.copy_(size)
        vq.embed_avg.copy_(avg)
        vq.codebook.weight.copy_(avg / smoothed[:, None])

    def _replace_dead(self, vq: VectorQuantize, counts: torch.Tensor, seed: int) -> int:
        """Codes used fewer than the threshold take the rows of the most used codes (the most
        used first, cycling) plus a seeded perturbation; how many were replaced."""
        dead = counts < self.dead_code_threshold
        n_dead = int(dead.sum())
        alive = self.codebook_size - n_dead
        if n_dead == 0 or alive == 0:
            return 0
        order = torch.sort(-counts, stable=True).indices[:alive]                   # used codes, most used first
        source = order[torch.arange(n_dead, device=order.device) % alive]
        target = dead.nonzero().squeeze(1)
        weight = vq.codebook.weight
        rows = weight[source].double()                                             # [n_dead, d]
        scale = rows.square().mean(1, keepdim=True).sqrt() * SPLIT_SCALE
        noise = torch.randn(rows.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        new = (rows + scale * noise.to(rows.device)).to(weight.dtype)
        weight[target] = new
        if self.ema:   # the new row restarts with a count of 1
            vq.cluster_size[target] = 1.0
            vq.embed_avg[target] = new.to(vq.embed_avg.dtype)
        return n_dead

    @torch.no_grad()
    def initialize(self, h: torch.Tensor, seed: int = 0) -> None:
        """k-means codebooks from encoder-head features h [N, D, F] (the same on every process),
        quantiser by quantiser on the residuals; marks the bottleneck initialised."""
        with torch.autocast(h.device.type, enabled=False):
            residual = h.float()
            for i, vq in enumerate(self.quantizers):
                weight = vq.codebook.weight
                z_e = rearrange(vq.project(vq.in_proj, residual.to(weight.device)), "n d f -> (n f) d")   # [N*F, d]
                centres, _ = kmeans(z_e, self.codebook_size, self.kmeans_iters, seed * self.num_quantizers + i)
                weight.copy_(centres)
                if self.ema:
                    vq.cluster_size.fill_(1.0)
                    vq.embed_avg.copy_(centres)
                residual = residual - vq.quantize(residual)[3]
        if self.init == "kmeans":
            self.kmeans_initialized.fill_(1.0)
