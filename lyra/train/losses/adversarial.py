"""Adversarial training losses: GAN losses, feature matching, and EnCodec's gradient balancer.

Inputs are discriminator outputs as `lyra.model.discriminators` defines them: a list of
``(logits, feature_maps)`` pairs, one per sub-discriminator. The losses accept that list
directly, or just the logits (``[logits, ...]``) / just the feature maps
(``[[f, ...], ...]``). To use several discriminators, concatenate their lists: every loss
averages over all sub-discriminators, so each counts equally. Losses are computed in
float32 (or float64 if given float64), whatever autocast produced.

With ``D_k`` the k-th of K sub-discriminators' logits, ``x`` real and ``x^`` generated audio,
and ``mean`` over all elements of a logits tensor:

- ``kind="hinge"`` (EnCodec, stable-audio-tools):
    D: 1/K sum_k [ mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(x^))) ]
    G: 1/K sum_k   mean(relu(1 - D_k(x^)))
  The generator term is the EnCodec paper's (eq. 2), not the ``-mean(D_k(x^))`` that
  stable-audio-tools and audiocraft's code use: the two agree while fake logits are below the
  margin 1; past it the hinge form stops pushing, so the generator is not rewarded for driving
  the logits of an already-fooled discriminator without bound.
- ``kind="least_squares"`` (LSGAN; HiFi-GAN, DAC):
    D: 1/K sum_k [ mean((1 - D_k(x))^2) + mean(D_k(x^)^2) ]
    G: 1/K sum_k   mean((1 - D_k(x^))^2)

Feature matching (`feature_matching_loss`) is EnCodec's relative L1, averaged over the K
sub-discriminators and their L_k layers:

    1/K sum_k 1/L_k sum_l mean(|f_kl(x) - f_kl(x^)|) / (mean(|f_kl(x)|) + eps)

Relative, so its scale does not drift as the discriminator's activations grow during training
and one weight keeps meaning the same thing; ``relative=False`` gives plain mean L1 per layer
(HiFi-GAN's and DAC's, up to their constant factors). The real features are targets: they are
detached.

A mel-spectrogram reconstruction loss is not here: it is `lyra.eval.stft.MultiResolutionSTFTLoss`
with ``n_mels`` set (``w_sc=0`` for DAC's log-mel L1), the same loss `lyra.eval.metrics.mel_distance`
measures with.

`Balancer` is EnCodec's loss balancer: each loss gets its weight's share of the gradient
norm at the generator's output, whatever the loss's own scale.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lyra.core.errors import LyraError

LossKind = Literal["hinge", "least_squares"]
KINDS = ("hinge", "least_squares")


def _logits(outputs: Sequence[Any], what: str) -> list[torch.Tensor]:
    """Discriminator outputs ((logits, features) pairs) or plain logits -> a list of logits."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    out = [o[0] if isinstance(o, (tuple, list)) else o for o in outputs]
    if not out or not all(isinstance(o, torch.Tensor) for o in out):
        raise LyraError(f"{what}: expected a non-empty list of discriminator outputs (logits or (logits, feature_maps) pairs)")
    return [o if o.dtype == torch.float64 else o.float() for o in out]


def _features(outputs: Sequence[Any], what: str) -> list[list[torch.Tensor]]:
    """Discriminator outputs ((logits, features) pairs) or feature-map lists -> feature maps."""
    out = []
    for o in outputs:
        if isinstance(o, (tuple, list)) and len(o) == 2 and isinstance(o[0], torch.Tensor) and isinstance(o[1], (list, tuple)):
            o = o[1]  # a (logits, feature_maps) pair
        if not isinstance(o, (list, tuple)) or not all(isinstance(f, torch.Tensor) for f in o):
            raise LyraError(f"{what}: expected a list of feature-map lists or (logits, feature_maps) pairs")
        out.append([f if f.dtype == torch.float64 else f.float() for f in o])
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise LyraError(f"adversarial loss: expected kind 'hinge' or 'least_squares', got {kind!r}")


def discriminator_loss(real: Sequence[Any], fake: Sequence[Any], kind: LossKind = "hinge") -> torch.Tensor:
    """The discriminator's loss on real and generated audio (formulas in the module docstring).

    `real` and `fake` are the discriminators' outputs for the same batch; detach the generated
    audio before the discriminator sees it, so this step does not reach the generator.
    """
    _check_kind(kind)
    real_l, fake_l = _logits(real, "discriminator_loss"), _logits(fake, "discriminator_loss")
    if len(real_l) != len(fake_l):
        raise LyraError(f"discriminator_loss: {len(real_l)} real outputs but {len(fake_l)} fake ones")
    total = 0.0
    for r, f in zip(real_l, fake_l):
        if kind == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        else:
            total = total + (1 - r).square().mean() + f.square().mean()
    return total / len(real_l)


def generator_loss(fake: Sequence[Any], kind: LossKind = "hinge") -> torch.Tensor:
    """The generator's adversarial loss on the discriminators' outputs for generated audio."""
    _check_kind(kind)
    fake_l = _logits(fake, "generator_loss")
    total = 0.0
    for f in fake_l:
        total = total + (F.relu(1 - f).mean() if kind == "hinge" else (1 - f).square().mean())
    return total / len(fake_l)


def feature_matching_loss(real_features: Sequence[Any], fake_features: Sequence[Any],
                          relative: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Mean (relative) L1 between real and generated feature maps (formula in the module docstring)."""
    real_f = _features(real_features, "feature_matching_loss")
    fake_f = _features(fake_features, "feature_matching_loss")
    if len(real_f) != len(fake_f) or not real_f:
        raise LyraError(f"feature_matching_loss: {len(real_f)} real sub-discriminator outputs but {len(fake_f)} fake ones")
    total = 0.0
    for k, (rs, fs) in enumerate(zip(real_f, fake_f)):
        if len(rs) != len(fs) or not rs:
            raise LyraError(f"feature_matching_loss: sub-discriminator {k} has {len(rs)} real feature maps but {len(fs)} fake ones")
        layer_total = 0.0
        for r, f in zip(rs, fs):
            if r.shape != f.shape:
                raise LyraError(f"feature_matching_loss: sub-discriminator {k}: feature shapes differ, "
                                f"{list(r.shape)} vs {list(f.shape)}")
            r = r.detach()
            distance = (r - f).abs().mean()
            layer_total = layer_total + (distance / (r.abs().mean() + eps) if relative else distance)
        total = total + layer_total / len(rs)
    return total / len(real_f)


class Balancer:
    """EnCodec's gradient balancer (Défossez et al. 2022, sec. 3.4).

    Given losses ``L_i`` that all depend on the generator's output ``y`` (e.g. the
    reconstruction, adversarial and feature-matching losses), and weights ``w_i``:

        g_i   = dL_i / dy                                  (one autograd.grad per loss)
        n_i   = mean over examples b of ||g_i[b]||_2       (``per_example=True``; else ||g_i||_2)
        N_i   = EMA of n_i:  s_i <- decay * s_i + n_i,  c_i <- decay * c_i + 1,  N_i = s_i / c_i
                (bias-corrected, so the first step uses n_i itself; ``decay=0`` uses n_i each step)
        G     = sum_i  (w_i / sum_j w_j) * total_norm * g_i / (N_i + eps)

    so each loss contributes its weight's share ``w_i / sum_j w_j`` of a gradient of norm
    ``total_norm`` per example, whatever its own scale; ``y.backward(G)`` then carries ``G`` into
    the generator. With ``rescale=False`` it is the plain weighted sum, ``G = sum_i w_i g_i``.
    Only the losses passed on a step take part (a loss not yet switched on, e.g. before the
    adversarial warm-up ends, neither takes a share nor updates its EMA).

    Usage, in the generator step::

        balancer = Balancer({"stft": 1.0, "adv": 1.0, "feature": 3.0})
        y = model.decode(z)                                    # the generator's output
        losses = {"stft": stft(y, x), "adv": generator_loss(d(y)), "feature": ...}
        balancer.backward(losses, y, other=kl_weight * kl)     # fills the generator's .grad

    `backward` computes ``G`` and runs one ``torch.autograd.backward`` from ``y`` with gradient
    ``scale * G`` (and, if given, from the scalar `other` with gradient ``scale``: a loss that
    does not depend on ``y``, such as the KL term, added unbalanced). ``scale`` is where a
    GradScaler's scale goes (``scale=scaler.get_scale()``, then ``scaler.unscale_`` /
    ``scaler.step`` as usual) and a ``1 / grad_accum`` factor. Gradients through the
    discriminators' parameters are not accumulated (``autograd.grad`` is taken with respect to
    ``y`` only). `gradient` returns ``G`` without the backward. Under fp16 autocast pass a
    float32 ``y`` (``y = decoder(z).float()``) so the per-loss gradients cannot underflow;
    ``scale`` then carries the GradScaler's factor into the half-precision part.

    Under ``torch.distributed`` (initialised, world size > 1, ``sync=True``) the norms ``n_i``
    are averaged over processes before the EMA, so every rank holds the same EMA and applies the
    same scales, as EnCodec does. The EMA is training state: save `state_dict` with the
    checkpoint for an exact resume. Note that the EMA advances once per call, so with gradient
    accumulation the result is not exactly that of one large batch.
    """

    def __init__(self, weights: Mapping[str, float], rescale: bool = True, total_norm: float = 1.0,
                 decay: float = 0.999, per_example: bool = True, eps: float = 1e-12, sync: bool = True) -> None:
        if not weights:
            raise LyraError("balancer: needs at least one loss weight")
        for name, w in weights.items():
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise LyraError(f"balancer: weight of '{name}' must be a finite number >= 0, got {w!r}")
        if not 0 <= decay < 1:
            raise LyraError(f"balancer: decay must be in [0, 1), got {decay!r}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.rescale = rescale
        self.total_norm = float(total_norm)
        self.decay = float(decay)
        self.per_example = per_example
        self.eps = float(eps)
        self.sync = sync
        self._sums: dict[str, torch.Tensor] = {}    # EMA numerators s_i (float64, on the gradient's device)
        self._counts: dict[str, float] = {}          # EMA denominators c_i
        self.norms: dict[str, float] = {}            # the last step's EMA norms N_i (for logging)
        self._norm_tensors: dict[str, torch.Tensor] = {}

    # -- the gradient ---------------------------------------------------------------------
    def gradient(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor) -> torch.Tensor:
        """``G``: the balanced gradient with respect to `output` (updates the EMA when rescaling)."""
        if not losses:
            raise LyraError("balancer: no losses given")
        unknown = [k for k in losses if k not in self.weights]
        if unknown:
            raise LyraError(f"balancer: no weight for loss '{unknown[0]}' (weights: {', '.join(self.weights)})")
        grads: dict[str, torch.Tensor] = {}
        for name, loss in losses.items():
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                raise LyraError(f"balancer: loss '{name}' must be a scalar tensor that requires grad")
            (grad,) = torch.autograd.grad(loss, [output], retain_graph=True, allow_unused=True)
            if grad is None:
                raise LyraError(f"balancer: loss '{name}' does not depend on the output it balances; "
                                "pass it as `other` to backward instead")
            grads[name] = grad
        if not self.rescale:
            return sum(self.weights[k] * g for k, g in grads.items())

        norms = torch.stack([self._norm(g) for g in grads.values()])  # [n_losses], float64
        if self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(norms)
            norms = norms / dist.get_world_size()
        avg: dict[str, torch.Tensor] = {}
        for name, n in zip(grads, norms):
            s = self._sums.get(name)
            self._sums[name] = n if s is None else self.decay * s.to(n.device) + n
            self._counts[name] = self.decay * self._counts.get(name, 0.0) + 1.0
            avg[name] = self._sums[name] / self._counts[name]
        self._norm_tensors = avg
        self.norms = {}  # filled lazily by `last_norms`, to avoid a device sync per step
        total_weight = sum(self.weights[k] for k in grads)
        if total_weight <= 0:
            raise LyraError(f"balancer: the weights of {', '.join(grads)} sum to 0")
        out = 0.0
        for name, g in grads.items():
            scale = (self.weights[name] / total_weight) * self.total_norm / (avg[name] + self.eps)
            out = out + g * scale.to(g.dtype)
        return out

    def backward(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor,
                 other: torch.Tensor | None = None, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Backpropagate ``scale * G`` from `output` (and ``scale * other``), in one backward.

        Returns ``G`` (detached), e.g. to log its norm."""
        grad = self.gradient(losses, output)
        tensors, grad_tensors = [output], [grad * scale]
        if other is not None:
            tensors.append(other)
            grad_tensors.append(torch.ones_like(other) * scale)
        torch.autograd.backward(tensors, grad_tensors)
        return grad.detach()

    def last_norms(self) -> dict[str, float]:
        """The EMA gradient norms ``N_i`` of the last step, as floats (for logging)."""
        if not self.norms and self._norm_tensors:
            self.norms = {k: float(v) for k, v in self._norm_tensors.items()}
        return dict(self.norms)

    def _norm(self, grad: torch.Tensor) -> torch.Tensor:
        g = grad.detach().to(torch.float64) if grad.device.type != "mps" else grad.detach().float()
        if self.per_example and g.dim() > 1:
            return torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1).mean()
        return torch.linalg.vector_norm(g)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: float(v) for k, v in self._sums.items()}, "counts": dict(self._counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._sums = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in state.get("sums", {}).items()}
        self._counts = {k: float(v) for k, v in state.get("counts", {}).items()}
        self.norms, self._norm_tensors = {}, {}

