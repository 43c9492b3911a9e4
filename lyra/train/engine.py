"""The training loop: `train(cfg)` runs one process of a (possibly distributed) training run.

The same code runs alone or under torchrun (see `lyra.core.distributed`); only rank 0 logs,
validates and saves. `Trainer` ties the parts together, each in a module of its own:

    lyra.train.run_setup    what the run continues or starts from (--resume, --init-from), and
                            the model, optimizer and data it trains with
    lyra.train.steps        one optimizer step (micro-batches, losses, backward, clipping, AdamW,
                            EMA) and the logging after it
    lyra.train.validation   validation (rank 0), its audio and pictures, the best value

and here: the loop (`Trainer.run`: step, validate every `eval_every` steps, save every
`save_every` steps, stop on SIGINT/SIGTERM after a step or, with grad_accum > 1, between
micro-batches, the step undone) and the training state it saves. At the final
step, validation comes before the final snapshot, so latest.pt holds the final best value.
See docs/training.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from lyra.core import distributed
from lyra.core.devices import precision_dtype
from lyra.core.errors import LyraError
from lyra.core.progress import Progress
from lyra.train.checkpointing import CheckpointStore
from lyra.train.codebook_init import initialize_codebooks
from lyra.train.config import TrainConfig
from lyra.train.data import (CropDataset, CropSpec, EpochBatchSampler, Warn, check_data_dirs, print_warning,
                             seed_worker, validation_set)
from lyra.train.discriminator_training import Adversary, check_discriminators
from lyra.train.ema import EMA
from lyra.train.forward import ReconstructionPass
from lyra.train.interrupt import stop_requests
from lyra.train.losses.reconstruction import ReconstructionLoss
from lyra.train.metrics_log import MetricsLog, check_trackers
from lyra.train.run_setup import (build_generator, build_optimizer, check_start, initial_weights, previous_run, restore,
                                  resumed_start, training_files)
from lyra.train.state import Position, capture_rng
from lyra.train.steps import TrainingStep
from lyra.train.validation import Validation


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
    only (see `lyra.train.run_setup`). `model_in_config=False` says the run config had no [model]
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


class Trainer:
    """One process of a training run: its parts, built in `lyra.train.run_setup`'s order, and the loop."""

    def __init__(self, cfg: TrainConfig, ctx: distributed.Distributed, resume: bool,
                 stream: TextIO | None, warn: Warn, *, init_from: str | Path | None = None,
                 freeze_encoder: bool = False, model_in_config: bool = True) -> None:
        check_start(resume, init_from)
        self.ctx = ctx
        self.device = ctx.device
        self.stream = stream
        self.run_dir = Path(cfg.run_dir)
        self.store = CheckpointStore(self.run_dir, cfg.checkpoint.keep_last)
        main_warn = warn if ctx.is_main else _quiet
        saved = previous_run(self.store, resume)
        # How the run begins (or, resumed, began); either may take its model from a checkpoint.
        if saved is not None:
            init = None
            # Changed settings: refused now; warned once the rest of the saved state has been checked.
            self.start, cfg, resume_warnings = resumed_start(saved, cfg, self.store.latest, self.device,
                                                             freeze_encoder, model_in_config)
        else:
            init, self.start, cfg = initial_weights(cfg, init_from, freeze_encoder, model_in_config, main_warn)
            resume_warnings = []
        self.cfg = cfg

        # Data: scan, split, crops, validation.
        self.spec = CropSpec(cfg.data.segment_length, cfg.model.sample_rate, cfg.model.channels,
                             cfg.data.silence_threshold_db, cfg.data.peak)
        train_files, val_files = training_files(cfg, main_warn)
        self.dataset = CropDataset(train_files, self.spec, cfg.seed, cfg.data.train_dir,
                                   cfg.data.crop_attempts, warn=warn)
        self.hours = sum(f.frames / f.sample_rate for f in train_files) / 3600
        self.n_train_files, self.n_val_files = len(train_files), len(val_files)
        clips = None
        if ctx.is_main and val_files:
            folder = cfg.data.val_dir or cfg.data.train_dir
            clips = validation_set(val_files, self.spec, cfg.data.val_clips, folder, warn)

        # Loss (its settings can still fail: mel bands), then the model and optimizer.
        self.loss = ReconstructionLoss(cfg, self.device)
        self.model = build_generator(cfg, self.start, self.device, init, init_from, saved)
        if saved is None:   # a fresh run: data-driven codebooks (rvq init = "kmeans"), the same on every process
            initialize_codebooks(self.model, self.dataset, self.device, cfg.data.batch_size)
        del init
        self.dtype = precision_dtype(cfg.runtime.precision, self.device, key="runtime.precision")
        self.optimizer = build_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        # The discriminators (built from their own seed: the global random state is untouched).
        self.adversary = Adversary(cfg, self.device, self.dtype, ctx.world_size) if cfg.adversarial.enabled else None
        # The EMA of the weights lives where validation and saving happen: rank 0.
        self.ema = EMA(self.model, cfg.ema.decay, cfg.ema.start_step) if cfg.ema.enabled and ctx.is_main else None
        self.validation = Validation(cfg, clips, model=self.model, ema=self.ema, loss=self.loss, device=self.device,
                                     dtype=self.dtype, spec=self.spec, run_dir=self.run_dir)

        # Where we are.
        self.position = Position()
        if saved is not None:
            self.position, warnings = restore(saved, self.store.latest, optimizer=self.optimizer, scaler=self.scaler,
                                              adversary=self.adversary, ema=self.ema, best=self.validation.best,
                                              world_size=ctx.world_size)
            resume_warnings += warnings
        self.sampler = EpochBatchSampler(self.dataset.epoch_size, cfg.data.batch_size, cfg.seed,
                                         self.position.batches, ctx.world_size, ctx.rank)

        forward = ReconstructionPass(self.model)
        if ctx.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(forward, device_ids=ids)
        self.train_step = TrainingStep(cfg, ctx, model=self.model, forward=forward, optimizer=self.optimizer,
                                       scaler=self.scaler, adversary=self.adversary, ema=self.ema, loss=self.loss,
                                       dtype=self.dtype, spec=self.spec,
                                       batches_per_epoch=self.sampler.batches_per_epoch, position=self.position)

        if ctx.is_main:
            for message in resume_warnings:
                warn(message)

        self.log = None
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.log = MetricsLog(self.run_dir, cfg.logging, cfg.to_dict(), self.step if saved is not None else None)

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return self.position.step

    @property
    def best_metric(self) -> str:
        return self.validation.best.metric

    @property
    def best_val(self) -> float:
        """The best value of `checkpoint.best_metric` so far (+-inf: none yet)."""
        return self.validation.best.value

    # -- saving --------------------------------------------------------------------------
    def train_state(self) -> dict[str, Any]:
        """What `--resume` continues from (`lyra.train.state` describes it)."""
        pos = self.position
        state = {
            "step": pos.step, "batches": pos.batches, "best_val": self.best_val, "best_metric": self.best_metric,
            "nonfinite_run": pos.nonfinite_run, "audio_seconds": pos.audio_seconds,
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
                    stats, stop_now = self.train_step(batches, stop)
                    if stats is None:   # stopped between micro-batches: the step was undone
                        interrupted = stop.signal or -1
                        break
                    self.train_step.after(stats, self.log, progress)
                    # The last step validates (then saves) even off the eval_every/save_every grid.
                    final = self.step >= cfg.optim.max_steps
                    best = False
                    if (self.ctx.is_main and self.validation.clips is not None
                            and (self.step % cfg.logging.eval_every == 0 or final)):
                        best = self.validation(self.step, self.log, progress)
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
            raise LyraError(str(exc).strip().splitlines()[-1].removeprefix("lyra.core.errors.LyraError: ")) from None
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
