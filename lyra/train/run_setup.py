"""Setting a training run up: what it continues or starts from, and the parts it trains with.

`lyra.train.engine.Trainer` calls these in an order that puts everything that can fail on
user input first (config, folders, trackers, discriminator names and options, existing run
directory or --init-from checkpoint and, on --resume, the settings the run was saved with
(`lyra.train.resume_check`), audio scan, loss settings) and the model and workers after it.

Fine-tuning (`lyra train cfg.toml --init-from CKPT [--freeze-encoder]`): `init_from` starts a
new run (step 0, fresh optimizer, schedule, data order and RNG, like any new run) whose weights
are those of checkpoint CKPT (its EMA weights if it has them): a model checkpoint (`lyra
init-checkpoint`, an imported one) or another run's training checkpoint, of which only the
weights are taken. The config's [model] must describe CKPT's model (else a one-line error names
the first differing key); a config without a [model] table takes CKPT's
(`model_in_config=False`). `freeze_encoder` sets requires_grad=False on every encoder parameter
and leaves them out of the optimizer (and so of DDP's gradient buckets and of weight decay),
and on the bottleneck's too (an rvq's codebooks, whose EMA updates stop as well): the posterior
or the codes, and so the latent space, stay fixed; the KL term is still computed and logged
but has no gradient; the reconstruction loss trains the decoder. How the run began is saved in
every checkpoint (`lyra.train.state.RunStart`), so `--resume` continues it exactly without
either flag; `--resume` with `init_from` is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lyra.core.errors import LyraError
from lyra.model.checkpoint import model_from_state, read_checkpoint
from lyra.model.stored_model import check_weights, config_from_state
from lyra.model.vae import VAE, build_model
from lyra.train.activation_checkpointing import checkpoint_residual_units
from lyra.train.checkpointing import CheckpointStore
from lyra.train.config import TrainConfig, model_difference, with_checkpoint_model
from lyra.train.data import AudioFile, Warn, scan_audio, split_files
from lyra.train.discriminator_training import Adversary
from lyra.train.ema import EMA
from lyra.train.optim import parameter_groups
from lyra.train.resume_check import check_resume_config
from lyra.train.state import Position, RunStart, check_optimizer_state, check_train_state, restore_rng
from lyra.train.validation import BestValue


def check_start(resume: bool, init_from: str | Path | None) -> None:
    """A run either starts (perhaps from a checkpoint's weights) or resumes, not both."""
    if resume and init_from is not None:
        raise LyraError("--init-from starts a new run and --resume continues one: pass one or the other "
                        "(a resumed run keeps the weights it started from)")


# -- how the run begins ------------------------------------------------------------------
def previous_run(store: CheckpointStore, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (checked), or None; refuses to overwrite a run by accident."""
    latest = store.latest
    if not resume:
        if latest.exists():
            raise LyraError(
                f"{store.run_dir}: already holds a training run (latest.pt); pass --resume to "
                f"continue it, or set run_dir to a new folder"
            )
        return None
    if not latest.exists():
        raise LyraError(f"{latest}: no checkpoint to resume from (run without --resume to start)")
    state = read_checkpoint(latest)
    check_train_state(state, latest)   # weights fit the config; every key `restore` reads
    return state


def resumed_start(saved: dict[str, Any], cfg: TrainConfig, latest: Path, device: torch.device,
                  freeze_encoder: bool, model_in_config: bool) -> tuple[RunStart, TrainConfig, list[str]]:
    """How the resumed run began, its config with the model it trains, and the warnings about
    changed settings (`lyra.train.resume_check`; refused ones raise now)."""
    start = RunStart.from_state(saved["train"], latest)
    if freeze_encoder and not start.freeze_encoder:
        raise LyraError(
            f"{latest}: this run trains its encoder, and a resumed run keeps that; to train the decoder "
            f"alone, start a new run from this one: --init-from {latest} --freeze-encoder"
        )
    saved_model = config_from_state(saved, str(latest))
    if not model_in_config and start.model_from_checkpoint:
        cfg = with_checkpoint_model(cfg, False, saved_model, str(latest))
    else:
        diff = model_difference(cfg.model, saved_model, "the config", "the checkpoint")
        if diff is not None:
            raise LyraError(f"{latest}: the config's [model] differs from the checkpoint's ({diff}); "
                            f"a resumed run keeps its model")
    train = saved["train"]
    threads = None
    if device.type == "cpu":
        threads = (int(train.get("threads", torch.get_num_threads())), torch.get_num_threads())
    return start, cfg, check_resume_config(train.get("config"), cfg, latest, threads)


def initial_weights(cfg: TrainConfig, init_from: str | Path | None, freeze_encoder: bool, model_in_config: bool,
                    warn: Warn) -> tuple[dict[str, Any] | None, RunStart, TrainConfig]:
    """For a new run: the --init-from checkpoint (checked), how the run begins, its config."""
    if init_from is None:
        if freeze_encoder:
            warn("--freeze-encoder without --init-from: the encoder keeps its random initial weights")
        return None, RunStart(freeze_encoder=freeze_encoder), cfg
    source = str(init_from)
    state = read_checkpoint(init_from)
    state.pop("train", None)   # another run's optimizer, schedule, data order and RNG: not taken
    model = config_from_state(state, source)
    cfg = with_checkpoint_model(cfg, model_in_config, model, source)
    check_weights(model, state["model"], source)   # before the data scan; nothing is allocated
    start = RunStart(str(Path(init_from).absolute()), freeze_encoder, not model_in_config)
    return state, start, cfg


# -- what it trains with -----------------------------------------------------------------
def training_files(cfg: TrainConfig, warn: Warn) -> tuple[list[AudioFile], list[AudioFile]]:
    """The training and validation files: data.val_dir's, or a split of data.train_dir's."""
    d = cfg.data
    files = scan_audio(d.train_dir, d.extensions, cfg.model.channels, warn)
    if not files:
        raise LyraError(f"data.train_dir: no readable audio files in {d.train_dir}")
    if d.val_dir is not None:
        return files, scan_audio(d.val_dir, d.extensions, cfg.model.channels, warn)
    return split_files(files, d.val_fraction, d.train_dir)


def build_generator(cfg: TrainConfig, start: RunStart, device: torch.device, init: dict[str, Any] | None = None,
                    init_from: str | Path | None = None, saved: dict[str, Any] | None = None) -> VAE:
    """The model that trains, on `device`: from the --init-from checkpoint `init`, or built from
    the config's seed (and loaded from the resumed checkpoint `saved`); frozen, checkpointed and
    compiled as the run says."""
    torch.manual_seed(cfg.seed)
    if init is not None:   # built as build_model would (the same random draws), then loaded
        model = model_from_state(init, str(init_from))
    else:
        model = build_model(cfg.model)
        if saved is not None:
            model.load_state_dict(saved["model"])
    model.to(device)
    if start.freeze_encoder:   # before DDP and the optimizer, which take trainable parameters only
        model.encoder.requires_grad_(False)
        model.bottleneck.requires_grad_(False)   # codebooks too: a discrete model's codes keep their meaning
        model.bottleneck.frozen = True           # and no EMA update (`lyra.train.steps`)
    if cfg.runtime.activation_checkpointing:
        checkpoint_residual_units(model)
    if cfg.runtime.compile:
        model.compile()
    return model


def build_optimizer(model: VAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable weights; weight decay by `lyra.train.optim`'s rule."""
    o = cfg.optim
    return torch.optim.AdamW(parameter_groups(model, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps)


# -- resuming ----------------------------------------------------------------------------
def restore(saved: dict[str, Any], latest: Path, *, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            adversary: Adversary | None, ema: EMA | None, best: BestValue,
            world_size: int) -> tuple[Position, list[str]]:
    """Load a checked checkpoint's training state into the run's parts (`best` included) and
    the random-number generators; where the run is, and the warnings to give."""
    state = saved["train"]
    source = str(latest)
    warnings = []
    check_optimizer_state(state["optimizer"], optimizer, latest)
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    # Switched on for a run that had them off (resume_check warned): the discriminators
    # start from scratch, the EMA from the current weights.
    if adversary is not None and state.get("adversarial") is not None:
        adversary.load_state_dict(state["adversarial"], source)
    if ema is not None and "ema" in saved:
        ema.load_state_dict(saved["ema"], source)
    restore_rng(state["rng"])
    position = Position.from_state(state)
    saved_metric = state.get("best_metric", "loss")   # before best_metric existed: the validation loss
    if saved_metric == best.metric:
        best.value = float(state["best_val"])
    else:
        warnings.append(
            f"checkpoint.best_metric is {best.metric}, the run chose best.pt by {saved_metric} so far: "
            f"the best value starts over (best.pt is replaced at the next validation)")
    if int(state.get("world_size", 1)) != world_size:
        warnings.append(f"resuming a {state['world_size']}-process run with {world_size}: "
                        "the data order continues differently")
    return position, warnings
