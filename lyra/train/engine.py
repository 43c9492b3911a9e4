"""The training loop: `train(cfg)` runs one process of a (possibly distributed) training run.

The same code runs alone or under torchrun (see `lyra.train.distributed`); only rank 0 logs,
validates and saves. One optimizer step:

    lr = schedule(step); kl_w = anneal(step or epoch); adversarial = step >= adversarial.start_step
    for each of grad_accum micro-batches:                  (DDP syncs gradients on the last)
        audio [B, C, T], noise seeds [B] <- data order      (pure functions of the batch index)
        with autocast: recon, mean, logvar = VAE pass with per-example noise
        loss = STFT(recon, audio) [+ w * L1(recon, audio)] [+ mel_w * mel(recon, audio)]
               + kl_w * KL(mean, logvar)                    (in fp32)
        if adversarial (lyra.train.adversary):
            real, fake = discriminators([audio; recon])     (one pass over both halves)
            d_loss -> backward into the discriminators only
            loss += adv_w * G_adv(fake) + fm_w * FM(real, fake)
        backward(loss / grad_accum) into the generator      (scaled by a GradScaler for fp16;
                                                             or through EnCodec's balancer)
    all processes agree on: mean losses, any non-finite value, any stop request
    non-finite -> skip the step (logged; `max_nonfinite` in a row stops the run)
    else unscale, clip the gradient norms, AdamW steps (generator, and discriminators);
         a step a GradScaler skips (fp16 overflow) is logged as skipped and counted as non-finite
    EMA of the generator's weights (optional) <- the new weights

Validation (rank 0, every `eval_every` steps and at the end) runs with the EMA weights when
[ema] is on, and logs the reconstruction loss, SI-SDR, mel distance and multi-resolution STFT
distance; `checkpoint.best_metric` picks best.pt. At the final step, validation comes before
the final snapshot, so latest.pt holds the final best value.

Setup order puts everything that can fail on user input first (config, folders, trackers,
discriminator names and options, existing run directory or --init-from checkpoint and, on
--resume, the settings the run was saved with (`lyra.train.resume_check`), audio scan, loss
settings) and the model and workers after it.

Fine-tuning (`lyra train cfg.toml --init-from CKPT [--freeze-encoder]`): `init_from` starts a
new run (step 0, fresh optimizer, schedule, data order and RNG, like any new run) whose weights
are those of checkpoint CKPT (its EMA weights if it has them): a model checkpoint (`lyra
init-checkpoint`, an imported one) or another run's training checkpoint, of which only the
weights are taken. The config's [model] must describe CKPT's model (else a one-line error names
the first differing key); a config without a [model] table takes CKPT's
(`model_in_config=False`). `freeze_encoder` sets requires_grad=False on every encoder parameter
and leaves them out of the optimizer (and so of DDP's gradient buckets and of weight decay):
the posterior, and so the latent space, stays fixed; the KL term is still computed and logged
but has no gradient; the reconstruction loss trains the decoder. How the run began is saved in
every checkpoint (`RunStart`), so `--resume` continues it exactly without either flag;
`--resume` with `init_from` is an error.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TextIO

import torch

from lyra.checkpoint import check_optimizer_state, check_train_state, check_weights, model_from_state, read_checkpoint
from lyra.config import ModelConfig, from_dict
from lyra.errors import LyraError
from lyra.extras import installed
from lyra.loss import MultiResolutionSTFTLoss, kl_divergence, kl_weight
from lyra.metrics import MEL_BANDS, MEL_FFT_SIZES, mel_distance, si_sdr, stft_distance
from lyra.model import VAE, build_model
from lyra.plots import write_metrics_plot
from lyra.png import write_png
from lyra.progress import Progress
from lyra.spectrogram import pixel_image, spectrogram_picture
from lyra.train import distributed
from lyra.train.activation_checkpointing import checkpoint_residual_units
from lyra.train.adversary import Adversary, check_discriminators
from lyra.train.checkpointing import CheckpointStore
from lyra.train.config import BEST_METRICS, TrainConfig, model_difference, with_checkpoint_model
from lyra.train.data import (CropDataset, CropSpec, EpochBatchSampler, Warn, check_data_dirs,
                             print_warning, scan_audio, seed_worker, split_files, validation_set)
from lyra.train.interrupt import stop_requests
from lyra.train.ema import EMA
from lyra.train.metrics_log import MetricsLog, check_trackers, load_records
from lyra.train.optim import parameter_groups
from lyra.train.reconstruction import ReconstructionPass, posterior_noise
from lyra.train.resume_check import check_resume_config
from lyra.train.schedule import learning_rate
from lyra.train.state import RunStart, capture_rng, restore_rng


@dataclass
class TrainResult:
    step: int                      # optimizer steps done
    checkpoint: Path | None        # the last checkpoint written (rank 0), if any
    best_val: float                # best value of checkpoint.best_metric (+-inf: no validation)
    interrupted: int | None        # the signal that stopped the run early, if any


def train(cfg: TrainConfig, resume: bool = False, until_step: int | None = None,
          stream: TextIO | None = None, warn: Warn = print_warning, *,
          init_from: str | Path | None = None, freeze_encoder: bool = False,
          model_in_config: bool = True) -> TrainResult:
    """Train (or, with `resume`, continue) the run `cfg` describes, up to `optim.max_steps`.

    `until_step` stops earlier, saving a checkpoint as an interruption would (tests, schedules
    that train in pieces). Under torchrun, every process calls this.

    `init_from` starts the run from a checkpoint's weights, `freeze_encoder` trains the decoder
    only (see the module doc). `model_in_config=False` says the run config had no [model]
    table (its `cfg.model` is only the default): the `init_from` checkpoint's model is taken,
    and a resumed run that took it keeps it.
    """
    check_start(resume, init_from)
    check_data_dirs(cfg.data.train_dir, cfg.data.val_dir, cfg.data.extensions)
    check_trackers(cfg.logging)
    check_discriminators(cfg)
    ctx = distributed.setup(cfg.runtime.device)
    threads = torch.get_num_threads()
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    try:
        return Trainer(cfg, ctx, resume, stream, warn, init_from=init_from, freeze_encoder=freeze_encoder,
                       model_in_config=model_in_config).run(until_step)
    finally:
        torch.set_num_threads(threads)
        distributed.teardown(ctx)


def check_start(resume: bool, init_from: str | Path | None) -> None:
    """A run either starts (perhaps from a checkpoint's weights) or resumes, not both."""
    if resume and init_from is not None:
        raise LyraError("--init-from starts a new run and --resume continues one: pass one or the other "
                        "(a resumed run keeps the weights it started from)")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class Trainer:
    def __init__(self, cfg: TrainConfig, ctx: distributed.Distributed, resume: bool,
                 stream: TextIO | None, warn: Warn, *, init_from: str | Path | None = None,
                 freeze_encoder: bool = False, model_in_config: bool = True) -> None:
        check_start(resume, init_from)
        self.ctx = ctx
        self.device = ctx.device
        self.stream = stream
        self.warn = warn
        self.run_dir = Path(cfg.run_dir)
        self.store = CheckpointStore(self.run_dir, cfg.checkpoint.keep_last)
        self._resume_warnings: list[str] = []
        saved = self._previous_run(resume)
        # How the run begins (or, resumed, began); either may take its model from a checkpoint.
        if saved is not None:
            init = None
            self.start, cfg = self._resumed_start(saved, cfg, freeze_encoder, model_in_config)
        else:
            init, self.start, cfg = self._initial_weights(cfg, init_from, freeze_encoder, model_in_config)
        self.cfg = cfg

        # Data: scan, split, crops, order, validation.
        self.spec = CropSpec(cfg.data.segment_length, cfg.model.sample_rate, cfg.model.channels,
                             cfg.data.silence_threshold_db, cfg.data.peak)
        train_files, val_files = self._files()
        self.dataset = CropDataset(train_files, self.spec, cfg.seed, cfg.data.train_dir,
                                   cfg.data.crop_attempts, warn=warn)
        self.hours = sum(f.frames / f.sample_rate for f in train_files) / 3600
        self.n_train_files, self.n_val_files = len(train_files), len(val_files)
        self.val = None
        if ctx.is_main and val_files:
            folder = cfg.data.val_dir or cfg.data.train_dir
            self.val = validation_set(val_files, self.spec, cfg.data.val_clips, folder, warn)

        # Loss (its settings can still fail: mel bands), then the model and optimizer.
        lc = cfg.loss
        self.loss = MultiResolutionSTFTLoss(lc.fft_sizes, lc.hop_sizes, lc.win_lengths, lc.w_sc, lc.w_log_mag,
                                            lc.n_mels, cfg.model.sample_rate, lc.stereo).to(self.device)
        adv = cfg.adversarial
        self.mel_weight = adv.mel_weight if adv.enabled else 0.0
        self.mel_loss = None
        if self.mel_weight:   # lyra.metrics.mel_distance's loss, at the model's rate
            self.mel_loss = MultiResolutionSTFTLoss(
                MEL_FFT_SIZES, tuple(n // 4 for n in MEL_FFT_SIZES), MEL_FFT_SIZES, w_sc=0.0, w_log_mag=1.0,
                n_mels=MEL_BANDS, sample_rate=cfg.model.sample_rate).to(self.device)
        torch.manual_seed(cfg.seed)
        if init is not None:   # built as build_model would (the same random draws), then loaded
            self.model: VAE = model_from_state(init, str(init_from))
            del init
        else:
            self.model = build_model(cfg.model)
            if saved is not None:
                self.model.load_state_dict(saved["model"])
        self.model.to(self.device)
        if self.start.freeze_encoder:   # before DDP and the optimizer, which take trainable parameters only
            self.model.encoder.requires_grad_(False)
        if cfg.runtime.activation_checkpointing:
            checkpoint_residual_units(self.model)
        if cfg.runtime.compile:
            self.model.compile()
        self.dtype = resolve_precision(cfg.runtime.precision, self.device)
        self.optimizer = self._optimizer()
        self.params = [p for p in self.model.parameters() if p.requires_grad]   # what trains, in model order
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        # The discriminators (built from their own seed: the global random state is untouched).
        self.adversary = Adversary(cfg, self.device, self.dtype, ctx.world_size) if adv.enabled else None
        # The EMA of the weights lives where validation and saving happen: rank 0.
        self.ema = EMA(self.model, cfg.ema.decay, cfg.ema.start_step) if cfg.ema.enabled and ctx.is_main else None

        # Where we are.
        self.step = 0
        self.batches = 0
        self.best_metric = cfg.checkpoint.best_metric
        self.higher_is_better = BEST_METRICS[self.best_metric]
        self.best_val = -math.inf if self.higher_is_better else math.inf
        self.nonfinite_run = 0
        self.audio_seconds = 0.0
        if saved is not None:
            self._restore(saved)
        self.sampler = EpochBatchSampler(self.dataset.epoch_size, cfg.data.batch_size, cfg.seed,
                                         self.batches, ctx.world_size, ctx.rank)

        self.forward = ReconstructionPass(self.model)
        if ctx.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.forward, device_ids=ids)

        if ctx.is_main:
            for message in self._resume_warnings:
                warn(message)

        self.log = None
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.log = MetricsLog(self.run_dir, cfg.logging, cfg.to_dict(), self.step if saved is not None else None)

    # -- setup helpers -------------------------------------------------------------------
    def _previous_run(self, resume: bool) -> dict[str, Any] | None:
        """The checkpoint to resume from, or None; refuses to overwrite a run by accident."""
        latest = self.store.latest
        if not resume:
            if latest.exists():
                raise LyraError(
                    f"{self.run_dir}: already holds a training run (latest.pt); pass --resume to "
                    f"continue it, or set run_dir to a new folder"
                )
            return None
        if not latest.exists():
            raise LyraError(f"{latest}: no checkpoint to resume from (run without --resume to start)")
        state = read_checkpoint(latest)
        check_train_state(state, latest)   # weights fit the config; every key _restore reads
        return state

    def _resumed_start(self, saved: dict[str, Any], cfg: TrainConfig, freeze_encoder: bool,
                       model_in_config: bool) -> tuple[RunStart, TrainConfig]:
        """How the resumed run began, and its config with the model it trains."""
        latest = self.store.latest
        start = RunStart.from_state(saved["train"], latest)
        if freeze_encoder and not start.freeze_encoder:
            raise LyraError(
                f"{latest}: this run trains its encoder, and a resumed run keeps that; to train the decoder "
                f"alone, start a new run from this one: --init-from {latest} --freeze-encoder"
            )
        saved_model = from_dict(ModelConfig, saved["model_config"], f"{latest}:model")
        if not model_in_config and start.model_from_checkpoint:
            cfg = with_checkpoint_model(cfg, False, saved_model, str(latest))
        else:
            diff = model_difference(cfg.model, saved_model, "the config", "the checkpoint")
            if diff is not None:
                raise LyraError(f"{latest}: the config's [model] differs from the checkpoint's ({diff}); "
                                f"a resumed run keeps its model")
        train = saved["train"]
        threads = None
        if self.device.type == "cpu":
            threads = (int(train.get("threads", torch.get_num_threads())), torch.get_num_threads())
        # Refused now; warned once the rest of the saved state has been checked (end of __init__).
        self._resume_warnings += check_resume_config(train.get("config"), cfg, latest, threads)
        return start, cfg

    def _initial_weights(self, cfg: TrainConfig, init_from: str | Path | None, freeze_encoder: bool,
                         model_in_config: bool) -> tuple[dict[str, Any] | None, RunStart, TrainConfig]:
        """For a new run: the --init-from checkpoint (checked), how the run begins, its config."""
        if init_from is None:
            if freeze_encoder and self.ctx.is_main:
                self.warn("--freeze-encoder without --init-from: the encoder keeps its random initial weights")
            return None, RunStart(freeze_encoder=freeze_encoder), cfg
        source = str(init_from)
        state = read_checkpoint(init_from)
        state.pop("train", None)   # another run's optimizer, schedule, data order and RNG: not taken
        model = from_dict(ModelConfig, state["model_config"], f"{source}:model")
        cfg = with_checkpoint_model(cfg, model_in_config, model, source)
        check_weights(model, state["model"], source)   # before the data scan; nothing is allocated
        start = RunStart(str(Path(init_from).absolute()), freeze_encoder, not model_in_config)
        return state, start, cfg

    def _files(self):
        d = self.cfg.data
        files = scan_audio(d.train_dir, d.extensions, self.cfg.model.channels, self.warn if self.ctx.is_main else _quiet)
        if not files:
            raise LyraError(f"data.train_dir: no readable audio files in {d.train_dir}")
        if d.val_dir is not None:
            val = scan_audio(d.val_dir, d.extensions, self.cfg.model.channels, self.warn if self.ctx.is_main else _quiet)
            return files, val
        return split_files(files, d.val_fraction, d.train_dir)

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable weights; weight decay by `lyra.train.optim`'s rule."""
        o = self.cfg.optim
        return torch.optim.AdamW(parameter_groups(self.model, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps)

    def _restore(self, saved: dict[str, Any]) -> None:
        state = saved["train"]
        source = str(self.store.latest)
        check_optimizer_state(state["optimizer"], self.optimizer, self.store.latest)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        # Switched on for a run that had them off (resume_check warned): the discriminators
        # start from scratch, the EMA from the current weights.
        if self.adversary is not None and state.get("adversarial") is not None:
            self.adversary.load_state_dict(state["adversarial"], source)
        if self.ema is not None and "ema" in saved:
            self.ema.load_state_dict(saved["ema"], source)
        restore_rng(state["rng"])
        self.step = int(state["step"])
        self.batches = int(state["batches"])
        self.nonfinite_run = int(state["nonfinite_run"])
        self.audio_seconds = float(state["audio_seconds"])
        saved_metric = state.get("best_metric", "loss")   # before best_metric existed: the validation loss
        if saved_metric == self.best_metric:
            self.best_val = float(state["best_val"])
        else:
            self._resume_warnings.append(
                f"checkpoint.best_metric is {self.best_metric}, the run chose best.pt by {saved_metric} so far: "
                f"the best value starts over (best.pt is replaced at the next validation)")
        if int(state.get("world_size", 1)) != self.ctx.world_size:
            self._resume_warnings.append(f"resuming a {state['world_size']}-process run with {self.ctx.world_size}: "
                                         "the data order continues differently")

    def train_state(self) -> dict[str, Any]:
        state = {
            "step": self.step, "batches": self.batches, "best_val": self.best_val, "best_metric": self.best_metric,
            "nonfinite_run": self.nonfinite_run, "audio_seconds": self.audio_seconds,
            "world_size": self.ctx.world_size, "threads": torch.get_num_threads(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": capture_rng(), "config": self.cfg.to_dict(),
            "start": self.start.to_state(),
        }
        if self.adversary is not None:
            state["adversarial"] = self.adversary.state_dict()
        return state

    def save(self, best: bool = False) -> Path:
        """The snapshot of this step (rank 0)."""
        ema = self.ema.state_dict() if self.ema is not None else None
        return self.store.save(self.step, self.model, self.train_state(), best=best, ema=ema)

    # -- the loop ------------------------------------------------------------------------
    def run(self, until_step: int | None = None) -> TrainResult:
        cfg = self.cfg
        end = cfg.optim.max_steps if until_step is None else min(until_step, cfg.optim.max_steps)
        mode = cfg.logging.progress if self.ctx.is_main else "off"
        per_step = cfg.optim.grad_accum * self.ctx.world_size * cfg.data.batch_size * self.spec.length / self.spec.sample_rate
        # A bar on a terminal ("auto", "bar"); elsewhere, or with "lines", a line every log_every steps.
        progress = Progress("training", total=cfg.optim.max_steps, unit="steps", quiet=mode == "off",
                            stream=self.stream, rate=("audio-s/s", per_step), draw=mode != "lines")
        progress.update(completed=self.step)
        progress.log(self._banner())
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=cfg.data.num_workers,
            worker_init_fn=seed_worker, persistent_workers=cfg.data.num_workers > 0,
            pin_memory=self.device.type == "cuda",
        )
        batches = iter(loader)
        last_checkpoint = None
        saved_step = None
        interrupted = None
        try:
            with stop_requests() as stop, progress:
                while self.step < end:
                    stats, stop_now = self._train_step(batches, bool(stop))
                    self._after_step(stats, progress)
                    # The last step validates (then saves) even off the eval_every/save_every grid.
                    final = self.step >= cfg.optim.max_steps
                    best = False
                    if (self.ctx.is_main and self.val is not None
                            and (self.step % cfg.logging.eval_every == 0 or final)):
                        best = self.validate(progress)
                    if self.ctx.is_main and (best or final or self.step % cfg.checkpoint.save_every == 0):
                        last_checkpoint, saved_step = self.save(best), self.step
                    if stop_now:
                        interrupted = stop.signal or -1
                        break
            if self.ctx.is_main and saved_step != self.step:   # stopped early: save where we are
                last_checkpoint = self.save()
            if interrupted is not None:
                progress.log(f"stopped at step {self.step}: saved {self.store.latest}; "
                             f"continue with --resume")
            elif self.step >= cfg.optim.max_steps:
                best = (f", best validation {self.best_metric} {self.best_val:.4f} in {self.store.best}"
                        if self.store.best.exists() else "")
                progress.log(f"done: {self.step} steps; latest checkpoint {self.store.latest}{best}")
        except LyraError as exc:  # a worker's error arrives wrapped in a traceback: keep its last line
            raise LyraError(str(exc).strip().splitlines()[-1].removeprefix("lyra.errors.LyraError: ")) from None
        finally:
            progress.close()
            # Persistent workers outlive `del`: the loader keeps its iterator, and a traceback
            # keeps the loader. Stop them here, or a failed run leaves processes behind.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del batches
            if self.log is not None:
                self.log.close()
        return TrainResult(self.step, last_checkpoint, self.best_val, interrupted)

    # What each step logs, summed over micro-batches: (key, adversarial runs only).
    TERMS = (("loss", False), ("sc", False), ("log_mag", False), ("waveform", False), ("kl", False),
             ("mel", True), ("adversarial", True), ("feature_matching", True), ("d_loss", True))

    def _train_step(self, batches: Iterator, stop_requested: bool) -> tuple[dict[str, float], bool]:
        cfg = self.cfg
        started = time.perf_counter()
        lr = learning_rate(self.step, cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        adversary = self.adversary if self.adversary is not None and self.adversary.active(self.step) else None
        d_lr = adversary.set_lr(self.step) if adversary is not None else None
        kl_w = self.kl_weight()
        accum = cfg.optim.grad_accum
        frames = self.model.num_frames(self.spec.length)
        totals = torch.zeros(len(self.TERMS), dtype=torch.float64)   # summed over micro-batches
        for micro in range(accum):
            audio, seeds = next(batches)
            self.batches += 1
            noise = posterior_noise(seeds, cfg.model.latent_dim, frames)
            audio = audio.to(self.device, non_blocking=True)
            noise = noise.to(self.device, non_blocking=True)
            sync = micro == accum - 1 or not hasattr(self.forward, "no_sync")
            with contextlib.ExitStack() as contexts:
                if not sync:
                    contexts.enter_context(self.forward.no_sync())
                if adversary is not None:
                    contexts.enter_context(adversary.no_sync(sync))
                terms = self._micro_step(audio, noise, kl_w, accum, adversary)
            totals += torch.stack(terms).detach().double().cpu()

        # One collective: mean losses over micro-batches and processes, non-finite and stop flags.
        flags = torch.tensor([0.0 if torch.isfinite(totals).all() else 1.0, float(stop_requested)], dtype=torch.float64)
        reduced = distributed.all_sum(self.ctx, torch.cat([totals, flags]))
        n = len(self.TERMS)
        means = reduced[:n] / (accum * self.ctx.world_size)
        nonfinite = bool(reduced[n] > 0)
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
            self.nonfinite_run += 1
        else:
            self.nonfinite_run = 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.adversary is not None:
            self.adversary.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None and not skipped:
            self.ema.update(self.step)
        seconds = accum * self.ctx.world_size * cfg.data.batch_size * self.spec.length / self.spec.sample_rate
        self.audio_seconds += seconds
        values = {key: float(v) for (key, adv_only), v in zip(self.TERMS, means)
                  if not adv_only or self.adversary is not None}
        stats = {
            **values, "kl_weight": kl_w, "lr": lr, "grad_norm": grad_norm, "epoch": self.epoch(),
            "audio_s_per_s": seconds / (time.perf_counter() - started), "skipped": skipped,
        }
        if self.adversary is not None:   # before start_step: no discriminator step (d_lr 0, not skipped)
            stats.update(d_lr=d_lr or 0.0, d_grad_norm=d_grad_norm, d_skipped=adversary is not None and d_skipped,
                         adversarial_on=adversary is not None)
        return stats, bool(reduced[n + 1] > 0)

    def _micro_step(self, audio: torch.Tensor, noise: torch.Tensor, kl_w: float, accum: int,
                    adversary: Adversary | None) -> list[torch.Tensor]:
        """Forward and backward of one micro-batch; its loss terms (as `TERMS`, weighted)."""
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with autocast:
            recon, mean, logvar = self.forward(audio, noise)
        recon = recon.float()                                      # losses in fp32, outside autocast
        sc, mag, wave_raw, mel_raw = self.reconstruction_parts(recon, audio)
        w_wave = self.cfg.loss.w_waveform
        wave, mel = w_wave * wave_raw, self.mel_weight * mel_raw
        kl = kl_divergence(mean, logvar)
        zero = recon.new_zeros(())
        if adversary is None:
            loss = sc + mag + wave + mel + kl_w * kl
            if self.adversary is None:
                self.scaler.scale(loss / accum).backward()
            else:   # adversarial training not started yet: reconstruction only (and the balancer)
                self._generator_backward(loss, {"stft": sc + mag, "waveform": wave_raw, "mel": mel_raw},
                                         recon, kl_w * kl, accum)
            return [loss, sc, mag, wave, kl, mel, zero, zero, zero]

        a = adversary.cfg
        with autocast:
            real, fake = adversary.judge(audio, recon)            # one pass over [real; generated]
        d_loss, adv_raw, fm_raw = adversary.losses(real, fake)
        adv, fm = a.adversarial_weight * adv_raw, a.feature_matching_weight * fm_raw
        # The discriminators' gradient first, keeping the graph for the generator's.
        torch.autograd.backward(adversary.scaler.scale(d_loss / accum), inputs=adversary.params, retain_graph=True)
        loss = sc + mag + wave + mel + kl_w * kl + adv + fm
        self._generator_backward(loss, {"stft": sc + mag, "waveform": wave_raw, "mel": mel_raw,
                                        "adversarial": adv_raw, "feature_matching": fm_raw},
                                 recon, kl_w * kl, accum)
        return [loss, sc, mag, wave, kl, mel, adv, fm, d_loss]

    def _generator_backward(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], recon: torch.Tensor,
                            kl_term: torch.Tensor, accum: int) -> None:
        """Gradients into the generator only: of `loss`, or, with the balancer, of its `parts`
        (those with a weight) balanced at `recon`, plus the KL term unbalanced."""
        balancer = self.adversary.balancer if self.adversary is not None else None
        if balancer is None:
            torch.autograd.backward(self.scaler.scale(loss / accum), inputs=self.params)
            return
        parts = {k: v for k, v in parts.items() if k in balancer.weights}
        other = kl_term if kl_term.requires_grad else None
        balancer.backward(parts, recon, other=other, scale=self.scaler.get_scale() / accum)

    def reconstruction_parts(self, recon: torch.Tensor, audio: torch.Tensor):
        """(spectral convergence, log magnitude) weighted, (L1 waveform, log-mel L1) unweighted:
        each a per-example mean (the last two 0 when their weight is)."""
        recon = recon.float()
        sc, mag = self.loss.parts(recon, audio)
        zero = recon.new_zeros(())
        wave = (recon - audio).abs().mean() if self.cfg.loss.w_waveform else zero
        mel = self.mel_loss(recon, audio) if self.mel_loss is not None else zero
        return sc, mag, wave, mel

    def reconstruction_terms(self, recon: torch.Tensor, audio: torch.Tensor):
        """(spectral convergence, log magnitude, L1 waveform, mel), weighted, each a per-example mean."""
        sc, mag, wave, mel = self.reconstruction_parts(recon, audio)
        return sc, mag, self.cfg.loss.w_waveform * wave, self.mel_weight * mel

    def _after_step(self, stats: dict[str, float], progress: Progress) -> None:
        cfg = self.cfg
        if self.ctx.is_main:
            skipped = stats["skipped"] or stats.get("d_skipped", False)
            if skipped or self.step % cfg.logging.log_every == 0:
                self.log.write("train", self.step, stats)
            if skipped:
                which = "step skipped" if stats["skipped"] else "the discriminators' step skipped"
                progress.log(f"step {self.step}: non-finite loss or gradients, {which} "
                             f"({self.nonfinite_run} in a row)")
            losses = {"loss": stats["loss"], "sc": stats["sc"], "mag": stats["log_mag"], "kl": stats["kl"]}
            if "d_loss" in stats:                         # adversarial training
                losses["d_loss"] = stats["d_loss"]
            progress.update(completed=self.step, **losses, kl_w=stats["kl_weight"], lr=stats["lr"])
            if not progress.enabled and (self.step % cfg.logging.log_every == 0 or self.step == cfg.optim.max_steps):
                progress.log(progress.line())            # not on a terminal: a plain line now and then
        if self.nonfinite_run >= cfg.runtime.max_nonfinite:
            raise LyraError(
                f"training stopped at step {self.step}: the loss or gradients were non-finite for "
                f"{self.nonfinite_run} steps in a row; lower optim.lr, check the data, or use "
                f"runtime.precision = 'fp32'"
            )

    def epoch(self) -> float:
        """Epochs done (fractional), counting micro-batches."""
        return self.batches / self.sampler.batches_per_epoch

    def kl_weight(self) -> float:
        lc = self.cfg.loss
        if lc.kl_anneal_unit == "steps":
            progress = float(self.step)
        else:
            progress = self.step * self.cfg.optim.grad_accum / self.sampler.batches_per_epoch
        return kl_weight(progress, lc.kl_weight, lc.kl_anneal, lc.kl_floor, lc.kl_anneal_shape)

    # -- validation ----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, progress: Progress) -> bool:
        """Reconstruct the validation crops from their posterior means (with the EMA weights
        when [ema] is on); log, write audio.

        Logs the reconstruction loss (without the KL term, whose weight changes during
        annealing, and the adversarial terms), SI-SDR, mel distance and multi-resolution STFT
        distance; returns whether `checkpoint.best_metric` is the best so far.
        """
        weights = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with weights:
            values, recons = self._evaluate()
        value = values[self.best_metric]
        best = value > self.best_val if self.higher_is_better else value < self.best_val
        if best:
            self.best_val = value
        self.log.write("val", self.step, {**values, "best": best, "ema": self.ema is not None})
        progress.log(f"step {self.step}: validation loss {values['loss']:.4f}, SI-SDR {values['si_sdr']:.2f} dB, "
                     f"mel distance {values['mel_distance']:.3f}, STFT distance {values['stft_distance']:.3f}"
                     + (" (EMA)" if self.ema is not None else "") + (f" (best {self.best_metric})" if best else ""))
        if recons:
            self._write_audio(torch.cat(recons)[: self.cfg.logging.val_audio])
        if self.cfg.logging.plots and installed("matplotlib"):
            write_metrics_plot(load_records(self.log.path), self.run_dir / "metrics.png", f"{self.run_dir.name}: step {self.step}")
        return best

    def _evaluate(self) -> tuple[dict[str, float], list[torch.Tensor]]:
        self.model.eval()
        batch = self.cfg.data.batch_size
        keys = ("loss", "sc", "log_mag", "waveform", "kl", "si_sdr", "mel_distance", "stft_distance")
        if self.mel_loss is not None:
            keys += ("mel",)
        sums = dict.fromkeys(keys, 0.0)
        recons = []
        for i in range(0, len(self.val), batch):
            audio = self.val[i:i + batch].to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                mean, logvar = self.model.encode(audio)
                recon = self.model.decode(mean, audio.shape[-1])
            recon = recon.float()
            sc, mag, wave, mel = self.reconstruction_terms(recon, audio)
            n = audio.shape[0]
            sums["loss"] += float(sc + mag + wave + mel) * n
            sums["sc"] += float(sc) * n
            sums["log_mag"] += float(mag) * n
            sums["waveform"] += float(wave) * n
            if self.mel_loss is not None:
                sums["mel"] += float(mel) * n
            sums["kl"] += float(kl_divergence(mean, logvar)) * n
            sums["si_sdr"] += float(si_sdr(audio, recon).sum())
            sums["mel_distance"] += float(mel_distance(audio, recon, self.spec.sample_rate).sum())
            sums["stft_distance"] += float(stft_distance(audio, recon).sum())
            if len(recons) * batch < self.cfg.logging.val_audio:
                recons.append(recon.cpu())
        self.model.train()
        return {k: v / len(self.val) for k, v in sums.items()}, recons

    def _write_audio(self, recons: torch.Tensor) -> None:
        """Each clip's original and reconstruction as WAV and its spectrogram picture as PNG
        (`lyra.spectrogram`: labelled with `logging.plots` and matplotlib), in
        run_dir/samples/step-N/; the same to the trackers."""
        import soundfile as sf

        from lyra.atomic import atomic_path

        folder = self.run_dir / "samples" / f"step-{self.step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        clips = []
        for i, recon in enumerate(recons):
            original = self.val[i]
            for name, audio in (("original", original), ("reconstruction", recon)):
                with atomic_path(folder / f"clip{i}-{name}.wav") as tmp:
                    sf.write(str(tmp), audio.clamp(-1, 1).T.numpy(), self.spec.sample_rate, subtype="PCM_16", format="WAV")
            if self.cfg.logging.plots:
                picture = spectrogram_picture(original, recon, self.spec.sample_rate, f"step {self.step}: validation clip {i}")
            else:
                picture = pixel_image(original, recon)
            write_png(folder / f"clip{i}.png", picture)
            clips.append((original, recon, picture))
        self.log.media(self.step, clips, self.spec.sample_rate)

    def _banner(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        what = "resuming at step " + str(self.step) if self.step else "training"
        if self.start.init_from is not None and not self.step:
            what += f" from {self.start.init_from}"
        model = f"{n:,}-parameter model"
        if self.start.freeze_encoder:
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            model += f" (encoder frozen: {trainable:,} parameters train)"
        if self.adversary is not None:
            a = self.adversary.cfg
            d = sum(p.numel() for p in self.adversary.set.parameters())
            model += (f", discriminators {' + '.join(a.discriminators)} ({d:,} parameters, {a.loss} loss"
                      + (f", from step {a.start_step}" if a.start_step else "") + ")")
        if self.ema is not None:
            model += f", EMA (decay {self.cfg.ema.decay})"
        procs = f", {self.ctx.world_size} processes" if self.ctx.world_size > 1 else ""
        return (f"lyra: {what}: {model} on {self.device}{procs} ({str(self.dtype).removeprefix('torch.')}); "
                f"{_count(self.n_train_files, 'training file')} ({self.hours:.2f} h), "
                f"{_count(self.n_val_files, 'validation file')}; "
                f"{_count(self.sampler.batches_per_epoch, 'batch', 'batches')} per epoch; run dir {self.run_dir}")


def _count(n: int, one: str, many: str | None = None) -> str:
    """``1 validation file``, ``2 validation files``."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _quiet(message: str) -> None:
    """Warnings from processes other than rank 0 (rank 0 prints the same ones)."""


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
