"""One optimizer step of training, and the bookkeeping after it.

    lr = schedule(step); kl_w = anneal(step or epoch); adversarial = step >= adversarial.start_step
    for each of grad_accum micro-batches:                  (DDP syncs gradients on the last)
        audio [B, C, T], noise seeds [B] <- data order      (pure functions of the batch index)
        with autocast: recon, q = model pass with the bottleneck's per-example randomness
        loss = STFT(recon, audio) [+ w * L1(recon, audio)] [+ mel_w * mel(recon, audio)]
               + the bottleneck's terms: kl_w * KL (vae), or commitment_w * commitment
                 [+ codebook_w * codebook] (fsq/rvq)        (in fp32; lyra.train.losses)
        if adversarial (lyra.train.discriminator_training):
            real, fake = discriminators([audio; recon])     (one pass over both halves)
            d_loss -> backward into the discriminators only
            loss += adv_w * G_adv(fake) + fm_w * FM(real, fake)
        backward(loss / grad_accum) into the generator      (scaled by a GradScaler for fp16;
                                                             or through EnCodec's balancer)
    (grad_accum > 1: a stop request before a micro-batch undoes the step so far: `_Undo`)
    all processes agree on: mean losses, any non-finite value, any stop request, and the
        bottleneck's statistics (code counts: summed over micro-batches and processes)
    non-finite -> skip the step (logged; `max_nonfinite` in a row stops the run)
    else unscale, clip the gradient norms, AdamW steps (generator, and discriminators);
         a step a GradScaler skips (fp16 overflow) is logged as skipped and counted as non-finite
    bottleneck.update(statistics)                           (EMA codebooks, dead codes, usage: the
                                                             same on every process)
    EMA of the generator's weights (optional) <- the new weights

Every loss term travels by name (`TERMS`, the metrics.jsonl keys), never by position.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from lyra.core import distributed
from lyra.core.errors import LyraError
from lyra.core.progress import Progress
from lyra.model.bottlenecks.bottleneck import usage_metrics
from lyra.model.vae import VAE
from lyra.train.config import TrainConfig
from lyra.train.data import CropSpec
from lyra.train.discriminator_training import Adversary
from lyra.train.ema import EMA
from lyra.train.losses.kl import kl_weight
from lyra.train.losses.reconstruction import ReconstructionLoss, ReconstructionTerms
from lyra.train.metrics_log import MetricsLog
from lyra.train.schedule import learning_rate
from lyra.train.state import Position, capture_rng, restore_rng


@dataclass(frozen=True)
class Term:
    """A loss term a step logs: its metrics.jsonl key, and whether only adversarial runs log it."""

    key: str
    adversarial_only: bool = False
    bottleneck_term: bool = False   # logged only when the model's bottleneck returns it (its TERMS)


# The one definition of the loss terms a step logs, in metrics.jsonl's order. A micro-batch
# returns its terms keyed by these (one it lacks counts 0); each is summed over the
# micro-batches, then averaged over them and the processes. A new term: a `Term` here, and
# `_micro_step` returning it under its key.
TERMS = (Term("loss"), Term("sc"), Term("log_mag"), Term("waveform"), Term("kl", bottleneck_term=True),
         Term("commitment", bottleneck_term=True), Term("codebook", bottleneck_term=True), Term("mel", True),
         Term("adversarial", True), Term("feature_matching", True), Term("d_loss", True))
BOTTLENECK_TERMS = tuple(t.key for t in TERMS if t.bottleneck_term)   # the terms a bottleneck may return
_KEYS = frozenset(t.key for t in TERMS)


def term_vector(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """A micro-batch's terms (0-d tensors, by key) -> [len(TERMS)] float64 on the CPU, in `TERMS` order."""
    unknown = set(terms) - _KEYS
    if unknown:
        raise ValueError(f"loss terms {sorted(unknown)} are not in lyra.train.steps.TERMS")
    zero = next(iter(terms.values())).new_zeros(())
    return torch.stack([terms.get(t.key, zero) for t in TERMS]).detach().double().cpu()


class TrainingStep:
    """``step(batches, stop_requested) -> (stats, stop_now)``: one optimizer step of the run,
    advancing `position` (or, stopped between micro-batches, none: ``(None, True)``); `after`
    logs it and stops a run that keeps failing."""

    def __init__(self, cfg: TrainConfig, ctx: distributed.Distributed, *, model: VAE, forward: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, adversary: Adversary | None,
                 ema: EMA | None, loss: ReconstructionLoss, dtype: torch.dtype, spec: CropSpec,
                 batches_per_epoch: int, position: Position) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.device = ctx.device
        self.model = model
        self.forward = forward   # the model's training pass (`lyra.train.forward`), under DDP with torchrun
        self.optimizer = optimizer
        self.params = [p for p in model.parameters() if p.requires_grad]   # what trains, in model order
        self.scaler = scaler
        self.adversary = adversary
        self.ema = ema
        self.loss = loss
        self.dtype = dtype
        self.spec = spec
        self.batches_per_epoch = batches_per_epoch
        self.position = position
        self.bottleneck = model.bottleneck
        unknown = [key for key in self.bottleneck.TERMS if key not in BOTTLENECK_TERMS]
        if unknown:
            raise LyraError(f"model.bottleneck: '{cfg.model.bottleneck}' returns the loss term '{unknown[0]}'; "
                            f"a bottleneck's terms are {', '.join(BOTTLENECK_TERMS)} (each weighted in [loss])")
        self.logged = tuple(t for t in TERMS if not t.bottleneck_term or t.key in self.bottleneck.TERMS)

    def epoch(self) -> float:
        """Epochs done (fractional), counting micro-batches."""
        return self.position.batches / self.batches_per_epoch

    def kl_weight(self) -> float:
        lc = self.cfg.loss
        if lc.kl_anneal_unit == "steps":
            progress = float(self.position.step)
        else:
            progress = self.position.step * self.cfg.optim.grad_accum / self.batches_per_epoch
        return kl_weight(progress, lc.kl_weight, lc.kl_anneal, lc.kl_floor, lc.kl_anneal_shape)

    # -- the step ------------------------------------------------------------------------
    def __call__(self, batches: Iterator, stop_requested: object) -> tuple[dict[str, float] | None, bool]:
        """`stop_requested` is true once a stop is asked for (a `StopRequest`, read as a bool).
        With grad_accum > 1 it is read before each micro-batch too: a stop there undoes the
        step so far and returns ``(None, True)``, leaving the state of the last completed step."""
        cfg, pos = self.cfg, self.position
        started = time.perf_counter()
        accum = cfg.optim.grad_accum
        undo = _Undo(self) if accum > 1 else None   # before the step changes anything
        lr = learning_rate(pos.step, cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        adversary = self.adversary if self.adversary is not None and self.adversary.active(pos.step) else None
        d_lr = adversary.set_lr(pos.step) if adversary is not None else None
        weights = self.term_weights()
        frames = self.model.num_frames(self.spec.length)
        totals = torch.zeros(len(TERMS), dtype=torch.float64)   # summed over micro-batches
        code_stats: dict[str, torch.Tensor] = {}                 # the bottleneck's, summed likewise
        for micro in range(accum):
            if undo is not None and self._stop_agreed(stop_requested):
                undo.restore()
                return None, True
            audio, seeds = next(batches)
            pos.batches += 1
            noise = self.bottleneck.noise(seeds, frames)
            audio = audio.to(self.device, non_blocking=True)
            noise = noise.to(self.device, non_blocking=True)
            sync = micro == accum - 1 or not hasattr(self.forward, "no_sync")
            with contextlib.ExitStack() as contexts:
                if not sync:
                    contexts.enter_context(self.forward.no_sync())
                if adversary is not None:
                    contexts.enter_context(adversary.no_sync(sync))
                terms, micro_stats = self._micro_step(audio, noise, weights, accum, adversary)
            totals += term_vector(terms)
            for key, value in micro_stats.items():
                value = value.detach().double().cpu()
                code_stats[key] = code_stats[key] + value if key in code_stats else value

        # One collective: mean losses over micro-batches and processes, non-finite and stop flags.
        flags = torch.tensor([0.0 if torch.isfinite(totals).all() else 1.0, float(bool(stop_requested))], dtype=torch.float64)
        reduced = distributed.all_sum(self.ctx, torch.cat([totals, flags]))
        n = len(TERMS)
        means = dict(zip((t.key for t in TERMS), reduced[:n] / (accum * self.ctx.world_size)))
        nonfinite = bool(reduced[n] > 0)
        code_stats = {key: distributed.all_sum(self.ctx, value) for key, value in sorted(code_stats.items())}
        grad_norm = d_grad_norm = math.nan
        if not nonfinite:
            grad_norm = _unscale_and_clip(self.scaler, self.optimizer, self.params, cfg.optim.grad_clip)
            # With a GradScaler, inf gradients are its business (it skips the step and lowers its scale).
            nonfinite = not math.isfinite(grad_norm) and not self.scaler.is_enabled()
            if adversary is not None:
                d_grad_norm = _unscale_and_clip(adversary.scaler, adversary.optimizer, adversary.params,
                                                adversary.cfg.grad_clip)
                nonfinite |= not math.isfinite(d_grad_norm) and not adversary.scaler.is_enabled()
        skipped = d_skipped = nonfinite
        if not nonfinite:
            skipped = _optimizer_step(self.scaler, self.optimizer)
            if adversary is not None:
                d_skipped = _optimizer_step(adversary.scaler, adversary.optimizer)
        if skipped or (adversary is not None and d_skipped):
            pos.nonfinite_run += 1
        else:
            pos.nonfinite_run = 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.adversary is not None:
            self.adversary.optimizer.zero_grad(set_to_none=True)
        pos.step += 1
        with torch.no_grad():   # EMA codebooks, dead codes: after the step, identically on every process
            usage = {}
            if code_stats and not skipped and self.bottleneck.frozen:   # --freeze-encoder: its usage only
                usage = usage_metrics(code_stats["counts"]) if "counts" in code_stats else {}
            elif code_stats and not skipped:
                usage = self.bottleneck.update(code_stats, pos.step)
        if self.ema is not None and not skipped:
            self.ema.update(pos.step)
        seconds = accum * self.ctx.world_size * cfg.data.batch_size * self.spec.length / self.spec.sample_rate
        pos.audio_seconds += seconds
        values = {t.key: float(means[t.key]) for t in self.logged
                  if not t.adversarial_only or self.adversary is not None}
        stats = {
            **values, **usage, **({"kl_weight": weights["kl"]} if "kl" in self.bottleneck.TERMS else {}), "lr": lr, "grad_norm": grad_norm, "epoch": self.epoch(),
            "audio_s_per_s": seconds / (time.perf_counter() - started), "skipped": skipped,
        }
        if self.adversary is not None:   # before start_step: no discriminator step (d_lr 0, not skipped)
            stats.update(d_lr=d_lr or 0.0, d_grad_norm=d_grad_norm, d_skipped=adversary is not None and d_skipped,
                         adversarial_on=adversary is not None)
        return stats, bool(reduced[n + 1] > 0)

    def _stop_agreed(self, stop_requested: object) -> bool:
        """Whether any process has a stop request (all of them ask at the same micro-batch)."""
        flag = torch.tensor([float(bool(stop_requested))], dtype=torch.float64)
        return bool(distributed.all_sum(self.ctx, flag)[0] > 0)

    def term_weights(self) -> dict[str, float]:
        """The weight of each loss term a bottleneck may return, at this step."""
        lc = self.cfg.loss
        return {"kl": self.kl_weight(), "commitment": lc.commitment_weight, "codebook": lc.codebook_weight}

    def _micro_step(self, audio: torch.Tensor, noise: torch.Tensor, weights: dict[str, float], accum: int,
                    adversary: Adversary | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward and backward of one micro-batch: its loss terms (weighted) by `TERMS` key,
        and the bottleneck's statistics."""
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with autocast:
            recon, q = self.forward(audio, noise)
        recon = recon.float()                                      # losses in fp32, outside autocast
        raw = self.loss.terms(recon, audio)
        rec = self.loss.weighted(raw)
        code_terms = {key: value.float() for key, value in q.terms.items()}   # unweighted, by TERMS key
        bottleneck_loss = sum((weights[key] * value for key, value in code_terms.items()), torch.zeros((), device=recon.device))
        loss = rec.total() + bottleneck_loss
        if adversary is None:
            if self.adversary is None:
                self.scaler.scale(loss / accum).backward()
            else:   # adversarial training not started yet: reconstruction only (and the balancer)
                self._generator_backward(loss, raw, {}, recon, bottleneck_loss, accum)
            return {"loss": loss, **rec.by_name(), **code_terms}, q.stats

        a = adversary.cfg
        with autocast:
            real, fake = adversary.judge(audio, recon)            # one pass over [real; generated]
        adv = adversary.losses(real, fake)
        g_adv, fm = a.adversarial_weight * adv.adversarial, a.feature_matching_weight * adv.feature_matching
        # The discriminators' gradient first, keeping the graph for the generator's.
        torch.autograd.backward(adversary.scaler.scale(adv.d_loss / accum), inputs=adversary.params, retain_graph=True)
        loss = loss + g_adv + fm
        self._generator_backward(loss, raw, {"adversarial": adv.adversarial, "feature_matching": adv.feature_matching},
                                 recon, bottleneck_loss, accum)
        return ({"loss": loss, **rec.by_name(), **code_terms, "adversarial": g_adv, "feature_matching": fm,
                 "d_loss": adv.d_loss}, q.stats)

    def _generator_backward(self, loss: torch.Tensor, raw: ReconstructionTerms, adversarial: dict[str, torch.Tensor],
                            recon: torch.Tensor, bottleneck_loss: torch.Tensor, accum: int) -> None:
        """Gradients into the generator only: of `loss`, or, with the balancer, of the
        unweighted terms it has a weight for (`raw`, and the `adversarial` ones by balancer
        name) balanced at `recon`, plus the bottleneck's weighted terms unbalanced."""
        balancer = self.adversary.balancer if self.adversary is not None else None
        if balancer is None:
            torch.autograd.backward(self.scaler.scale(loss / accum), inputs=self.params)
            return
        parts = {"stft": raw.sc + raw.log_mag, "waveform": raw.waveform, "mel": raw.mel, **adversarial}
        parts = {k: v for k, v in parts.items() if k in balancer.weights}
        other = bottleneck_loss if bottleneck_loss.requires_grad else None
        balancer.backward(parts, recon, other=other, scale=self.scaler.get_scale() / accum)

    # -- after the step ------------------------------------------------------------------
    def after(self, stats: dict[str, float], log: MetricsLog | None, progress: Progress) -> None:
        """Log the step (rank 0: metrics.jsonl, the progress display); stop a run whose steps
        keep being skipped."""
        cfg, step = self.cfg, self.position.step
        if self.ctx.is_main:
            skipped = stats["skipped"] or stats.get("d_skipped", False)
            if skipped or step % cfg.logging.log_every == 0:
                log.write("train", step, stats)
            if skipped:
                which = "step skipped" if stats["skipped"] else "the discriminators' step skipped"
                progress.log(f"step {step}: non-finite loss or gradients, {which} "
                             f"({self.position.nonfinite_run} in a row)")
            losses = {"loss": stats["loss"], "sc": stats["sc"], "mag": stats["log_mag"]}
            if "kl" in stats:                             # the vae bottleneck
                losses.update(kl=stats["kl"], kl_w=stats["kl_weight"])
            if "commitment" in stats:                     # a discrete bottleneck
                losses["commit"] = stats["commitment"]
            if "d_loss" in stats:                         # adversarial training
                losses["d_loss"] = stats["d_loss"]
            progress.update(completed=step, **losses, lr=stats["lr"])
            if not progress.enabled and (step % cfg.logging.log_every == 0 or step == cfg.optim.max_steps):
                progress.log(progress.line())            # not on a terminal: a plain line now and then
        if self.position.nonfinite_run >= cfg.runtime.max_nonfinite:
            raise LyraError(
                f"training stopped at step {step}: the loss or gradients were non-finite for "
                f"{self.position.nonfinite_run} steps in a row; lower optim.lr, check the data, or use "
                f"runtime.precision = 'fp32'"
            )


class _Undo:
    """What a step's micro-batches change before its optimizer step, captured at the step's
    start so that a stop between micro-batches can put it back: the data position, the learning
    rates, the random states, the models' buffers (batch-norm statistics of a plugin) and the
    balancer's EMA. The accumulated gradients are dropped. The state is then the last completed
    step's, which a checkpoint saves and `--resume` continues exactly."""

    def __init__(self, step: TrainingStep) -> None:
        self.step = step
        self.batches = step.position.batches
        self.optimizers = [step.optimizer] + ([step.adversary.optimizer] if step.adversary is not None else [])
        self.lrs = [[group["lr"] for group in opt.param_groups] for opt in self.optimizers]
        self.rng = capture_rng()
        modules = [step.model] + ([step.adversary.set] if step.adversary is not None else [])
        self.buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        balancer = step.adversary.balancer if step.adversary is not None else None
        self.balancer = balancer.state_dict() if balancer is not None else None

    def restore(self) -> None:
        step = self.step
        step.position.batches = self.batches
        for opt, lrs in zip(self.optimizers, self.lrs):
            opt.zero_grad(set_to_none=True)
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr
        restore_rng(self.rng)
        with torch.no_grad():
            for buffer, saved in self.buffers:
                buffer.copy_(saved)
        if self.balancer is not None:
            step.adversary.balancer.load_state_dict(self.balancer)


def _unscale_and_clip(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer,
                      params: list[torch.Tensor], clip: float) -> float:
    """Unscale the gradients (fp16) and clip their global norm; the norm before clipping."""
    scaler.unscale_(optimizer)
    return float(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf))


def _optimizer_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """Step (through the scaler) and return whether the step was skipped: a GradScaler skips a
    step whose gradients overflowed, and then, and only then, lowers its scale."""
    before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    return before is not None and scaler.get_scale() < before
