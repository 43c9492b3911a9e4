"""The training run's config: one TOML file, read once at the edge into typed dataclasses.

    run_dir = "runs/lyra"     seed = 0
    [model]       lyra.model.config.ModelConfig (registry names and sizes)
    [data]        folders, crops, batch size, workers
    [optim]       AdamW, learning-rate schedule, clipping, accumulation, run length
    [loss]        multi-resolution STFT loss and the KL term with its annealing
    [runtime]     device, precision, compilation, activation checkpointing
    [logging]     progress, metrics, validation audio, optional W&B / TensorBoard
    [checkpoint]  how often and how many checkpoints, and the metric that picks best.pt
    [adversarial] discriminators, GAN and feature-matching losses, the mel loss, the
                  discriminator's optimizer (off by default)
    [ema]         an exponential moving average of the generator's weights (off by default)

Every field's default follows the design document (batch 4, 40,960-sample crops, 44.1 kHz
stereo, the default model); each carries a one-line help text that `lyra config init` writes
as a comment. `TrainConfig.load(path)` validates keys, types and values and raises one-line
`LyraError`s naming the file and key. Relative paths are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lyra.core.limits import MAX_THREADS
from lyra.core.toml import from_dict, help_field, help_text, read_toml, to_dict
from lyra.model.config import ModelConfig
from lyra.core.errors import LyraError


_field = help_field   # a dataclass field with its help text (`lyra config init` writes it)

# Bounds on what a config makes a run allocate or loop over, far above any real run's: a
# value past one is a typo, refused at load rather than found as an out-of-memory or a hang.
MAX_SEED = 2**63 - 1            # a TOML integer; seed + epoch and seed + 1 stay valid torch seeds
MAX_VAL_CLIPS = 4096            # validation crops, all held in memory
MAX_SEGMENT_LENGTH = 1 << 24    # samples per crop (6.3 minutes at 44.1 kHz)
MAX_CROP_ATTEMPTS = 10_000      # draws per crop (a file read each)
MAX_GRAD_ACCUM = 4096           # micro-batches per optimizer step
MAX_FFT_SIZE = 1 << 15          # STFT loss FFT size
MAX_MEL_BANDS = 1024            # mel bands (and at most an FFT size's n_fft // 2 + 1 bins)


def _positive(obj: Any, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) <= 0:
            raise LyraError(f"{key}: must be positive, got {getattr(obj, key)}")


def _non_negative(obj: Any, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) < 0:
            raise LyraError(f"{key}: must not be negative, got {getattr(obj, key)}")


def _at_most(obj: Any, limit: int, *keys: str, why: str = "") -> None:
    for key in keys:
        if getattr(obj, key) > limit:
            raise LyraError(f"{key}: must be at most {limit:,}, got {getattr(obj, key):,}{why}")


def _finite(obj: Any) -> None:
    """Every number of the dataclass `obj` is finite (TOML's reader checks this too, for files;
    this is for Python callers). A NaN passes every comparison the other checks make."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise LyraError(f"{f.name}: must be a finite number, got {v}")


@dataclass(frozen=True)
class DataConfig:
    train_dir: str = _field("data/train", "folder scanned recursively for training audio")
    val_dir: str | None = _field(None, "folder of validation audio; unset: hold out val_fraction of train_dir's files")
    val_fraction: float = _field(0.05, "share of train_dir's files held out for validation when val_dir is unset")
    val_clips: int = _field(16, "number of fixed validation crops")
    segment_length: int = _field(40960, "samples per training crop (at the model's sample rate)")
    batch_size: int = _field(4, "crops per batch, per process (a torchrun job of N processes uses N x this)")
    num_workers: int = _field(2, "data-loading worker processes (0: load in the training process)")
    silence_threshold_db: float = _field(-40.0, "crops whose RMS is below this (dBFS) are rejected and redrawn")
    peak: float = _field(0.95, "each crop is scaled so its peak absolute value is this")
    crop_attempts: int = _field(50, "draws per crop before giving up on a folder with no usable audio")
    extensions: tuple[str, ...] = _field(("wav", "flac", "ogg", "mp3"), "audio file extensions scanned for")

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(e.lower().lstrip(".") for e in self.extensions))
        _finite(self)
        _positive(self, "val_clips", "segment_length", "batch_size", "crop_attempts", "peak")
        _non_negative(self, "num_workers")
        _at_most(self, MAX_VAL_CLIPS, "val_clips", why=" (the crops are held in memory)")
        _at_most(self, MAX_SEGMENT_LENGTH, "segment_length")
        _at_most(self, MAX_CROP_ATTEMPTS, "crop_attempts")
        if not 0.0 <= self.val_fraction < 1.0:
            raise LyraError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if not self.train_dir:
            raise LyraError("train_dir: must name a folder")
        if self.peak > 1.0:
            raise LyraError(f"peak: must be at most 1.0, got {self.peak}")
        if not self.extensions:
            raise LyraError("extensions: must not be empty")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = _field(1e-4, "peak learning rate (AdamW)")
    betas: tuple[float, ...] = _field((0.8, 0.99), "AdamW betas")
    eps: float = _field(1e-8, "AdamW epsilon")
    weight_decay: float = _field(1e-3, "AdamW weight decay, applied to weights of rank >= 2 except weight-norm magnitudes "
                                       "and parameters a module lists in `no_weight_decay` (never to biases or Snake parameters)")
    warmup_steps: int = _field(1000, "linear learning-rate warm-up from 0, in optimizer steps")
    schedule: Literal["cosine", "linear", "constant"] = _field("cosine", "learning-rate decay after warm-up: cosine, linear or constant")
    min_lr: float = _field(1e-6, "learning rate at max_steps for the cosine and linear schedules")
    max_steps: int = _field(200_000, "optimizer steps to train for")
    grad_clip: float = _field(1.0, "clip the global gradient norm to this (0: off)")
    grad_accum: int = _field(1, "micro-batches accumulated per optimizer step")

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        _finite(self)
        _positive(self, "lr", "max_steps", "grad_accum", "eps")
        _non_negative(self, "weight_decay", "warmup_steps", "min_lr", "grad_clip")
        _at_most(self, MAX_GRAD_ACCUM, "grad_accum")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise LyraError(f"betas: expected two numbers in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class LossConfig:
    fft_sizes: tuple[int, ...] = _field((1024, 2048, 512), "STFT loss FFT sizes (auraloss's defaults)")
    hop_sizes: tuple[int, ...] = _field((120, 240, 50), "STFT loss hop sizes, one per FFT size")
    win_lengths: tuple[int, ...] = _field((600, 1200, 240), "STFT loss window lengths, one per FFT size")
    w_sc: float = _field(1.0, "weight of the spectral-convergence term")
    w_log_mag: float = _field(1.0, "weight of the log-magnitude term")
    n_mels: int = _field(0, "mel bands for a mel-scale STFT loss (0: linear frequency)")
    stereo: Literal["channels", "sum_difference", "both"] = _field(
        "channels", "stereo handling: per channel, sum/difference (mid/side), or both added")
    w_waveform: float = _field(0.0, "weight of an L1 waveform term (EnCodec's time-domain loss; 0: off)")
    kl_weight: float = _field(1e-4, "weight of the KL term once annealed")
    kl_floor: float = _field(0.0, "KL weight at the start of annealing")
    kl_anneal: float = _field(5.0, "length of the KL warm-up, in kl_anneal_unit (0: none)")
    kl_anneal_unit: Literal["epochs", "steps"] = _field("epochs", "unit of kl_anneal: epochs or (optimizer) steps")
    kl_anneal_shape: Literal["linear", "cosine"] = _field("linear", "shape of the KL warm-up: linear or cosine")
    commitment_weight: float = _field(0.25, "weight of a discrete bottleneck's commitment term (descript-audio-codec's)")
    codebook_weight: float = _field(1.0, "weight of an rvq bottleneck's codebook term (codebook_update = \"loss\")")

    def __post_init__(self) -> None:
        for key in ("fft_sizes", "hop_sizes", "win_lengths"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        _finite(self)
        if not len(self.fft_sizes) == len(self.hop_sizes) == len(self.win_lengths) or not self.fft_sizes:
            raise LyraError(
                f"fft_sizes/hop_sizes/win_lengths: need one hop and window per FFT size, got "
                f"{len(self.fft_sizes)}, {len(self.hop_sizes)} and {len(self.win_lengths)}"
            )
        for n_fft, hop, win in zip(self.fft_sizes, self.hop_sizes, self.win_lengths):
            if not (0 < win <= n_fft and hop > 0):
                raise LyraError(f"win_lengths: need 0 < window <= FFT size and hop > 0, got FFT {n_fft}, hop {hop}, window {win}")
        if max(self.fft_sizes) > MAX_FFT_SIZE:
            raise LyraError(f"fft_sizes: every FFT size must be at most {MAX_FFT_SIZE}, got {max(self.fft_sizes)}")
        _non_negative(self, "w_sc", "w_log_mag", "w_waveform", "n_mels", "kl_weight", "kl_floor", "kl_anneal",
                      "commitment_weight", "codebook_weight")
        bins = min(self.fft_sizes) // 2 + 1   # a mel filterbank is [n_mels, bins] per FFT size
        if self.n_mels > min(bins, MAX_MEL_BANDS):
            raise LyraError(f"n_mels: {self.n_mels} mel bands are more than "
                            + (f"the {bins} frequency bins of FFT size {min(self.fft_sizes)}" if bins <= MAX_MEL_BANDS
                               else f"the most a mel loss takes, {MAX_MEL_BANDS}"))
        if self.w_sc == 0 and self.w_log_mag == 0:
            raise LyraError("w_sc/w_log_mag: at least one STFT loss term needs a positive weight")
        if self.kl_floor > self.kl_weight:
            raise LyraError(f"kl_floor: must not exceed kl_weight ({self.kl_floor} > {self.kl_weight})")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = _field("auto", "auto (CUDA if available, else CPU), cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _field(
        "auto", "autocast precision: auto (bf16 on a GPU that supports it, else fp32), fp32, bf16, fp16 (with a GradScaler)")
    compile: bool = _field(False, "torch.compile the model stage by stage (each encoder/decoder block and output activation)")
    activation_checkpointing: bool = _field(False, "recompute each residual unit's activations in the backward pass (saves memory)")
    max_nonfinite: int = _field(20, "stop after this many steps in a row with a non-finite loss or gradient")
    threads: int = _field(0, "CPU threads for PyTorch's operators in the training process (0: PyTorch's default)")

    def __post_init__(self) -> None:
        _positive(self, "max_nonfinite")
        _non_negative(self, "threads")
        _at_most(self, MAX_THREADS, "threads")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise LyraError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class LoggingConfig:
    log_every: int = _field(10, "append training metrics to metrics.jsonl every this many steps")
    eval_every: int = _field(1000, "validate (and write audio + spectrograms) every this many steps")
    val_audio: int = _field(2, "validation clips written as WAV + spectrogram at each evaluation")
    progress: Literal["auto", "bar", "lines", "off"] = _field(
        "auto", "progress display: auto (a bar on a terminal, else a line every log_every steps), bar (as "
                "auto), lines, off (nothing but errors: lyra train --quiet)")
    wandb: bool = _field(False, "also log metrics, validation audio and spectrograms to Weights & Biases "
                                "(the wandb extra: pip install 'lyra-codec[wandb]', or pip install -e '.[wandb]' in a clone)")
    wandb_project: str = _field("lyra", "W&B project name")
    tensorboard: bool = _field(False, "also log metrics, validation audio and spectrograms to TensorBoard in run_dir/tensorboard "
                                      "(the tensorboard extra: pip install 'lyra-codec[tensorboard]', or pip install -e '.[tensorboard]' in a clone)")
    plots: bool = _field(True, "with matplotlib installed (the plot extra), draw labelled validation spectrograms and "
                               "run_dir/metrics.png at each validation; false, or without it: bare spectrogram images")

    def __post_init__(self) -> None:
        _positive(self, "log_every", "eval_every")
        _non_negative(self, "val_audio")


# Validation metrics best.pt can be chosen by, and whether higher values are better.
BEST_METRICS: dict[str, bool] = {
    "mel_distance": False,    # log-mel L1 distance (lyra.eval.metrics.mel_distance)
    "stft_distance": False,   # multi-resolution STFT distance (lyra.eval.metrics.stft_distance)
    "si_sdr": True,           # scale-invariant SDR in dB
    "loss": False,            # the training reconstruction loss (STFT [+ waveform] [+ mel]), without KL or adversarial terms
}


@dataclass(frozen=True)
class CheckpointConfig:
    save_every: int = _field(1000, "write a checkpoint (and update latest.pt) every this many steps")
    keep_last: int = _field(3, "numbered checkpoints kept in run_dir/checkpoints (latest.pt and best.pt are extra)")
    best_metric: Literal["mel_distance", "stft_distance", "si_sdr", "loss"] = _field(
        "mel_distance", "validation metric that picks best.pt: mel_distance, stft_distance, loss (lower is better) "
                        "or si_sdr (higher is better)")

    def __post_init__(self) -> None:
        _positive(self, "save_every", "keep_last")


@dataclass(frozen=True)
class AdversarialConfig:
    enabled: bool = _field(False, "train adversarially: discriminators, GAN and feature-matching losses, mel loss")
    discriminators: tuple[str, ...] = _field(
        ("ms_stft",), "registered discriminators (see `lyra plugins`): ms_stft (multi-scale STFT), mpd (multi-period)")
    options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "options per discriminator, e.g. { ms_stft = { filters = 32 }, mpd = { periods = [2, 3, 5, 7, 11] } }"})
    loss: Literal["hinge", "least_squares"] = _field("hinge", "GAN loss: hinge (EnCodec, stable-audio-tools) or least_squares (HiFi-GAN, DAC)")
    adversarial_weight: float = _field(0.1, "weight of the generator's adversarial loss")
    feature_matching_weight: float = _field(5.0, "weight of the feature-matching loss (relative L1 of discriminator features)")
    mel_weight: float = _field(1.0, "weight of a log-mel L1 loss added to the reconstruction loss (from step 0; 0: off)")
    start_step: int = _field(0, "optimizer step at which the discriminators and adversarial terms start (before: reconstruction only)")
    lr: float = _field(1e-4, "the discriminators' peak learning rate (AdamW; its eps is optim.eps)")
    betas: tuple[float, ...] = _field((0.8, 0.99), "the discriminators' AdamW betas")
    weight_decay: float = _field(0.0, "the discriminators' AdamW weight decay (same parameter rule as optim.weight_decay)")
    warmup_steps: int = _field(0, "linear warm-up of the discriminators' learning rate, in steps from start_step")
    schedule: Literal["cosine", "linear", "constant"] = _field(
        "constant", "the discriminators' learning-rate decay after warm-up, until optim.max_steps: cosine, linear or constant")
    min_lr: float = _field(1e-6, "the discriminators' learning rate at optim.max_steps for the cosine and linear schedules")
    grad_clip: float = _field(10.0, "clip the discriminators' global gradient norm to this (0: off)")
    balancer: bool = _field(False, "EnCodec's gradient balancer: the loss weights become each loss's share of the "
                                   "gradient at the generator's output, whatever the loss's scale")

    def __post_init__(self) -> None:
        object.__setattr__(self, "discriminators", tuple(self.discriminators))
        object.__setattr__(self, "betas", tuple(self.betas))
        _finite(self)
        _positive(self, "lr")
        _non_negative(self, "adversarial_weight", "feature_matching_weight", "mel_weight", "start_step",
                      "weight_decay", "warmup_steps", "min_lr", "grad_clip")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise LyraError(f"betas: expected two numbers in [0, 1), got {list(self.betas)}")
        if self.enabled and not self.discriminators:
            raise LyraError("discriminators: name at least one discriminator (or set enabled = false)")
        if len(set(self.discriminators)) != len(self.discriminators):
            raise LyraError(f"discriminators: a name is listed twice: {list(self.discriminators)}")
        for name, opts in self.options.items():
            if not isinstance(opts, dict):
                raise LyraError(f"options.{name}: expected a table of options, got {type(opts).__name__}")
            if name not in self.discriminators:
                raise LyraError(f"options.{name}: '{name}' is not in discriminators ({', '.join(self.discriminators) or 'none'})")
        if self.enabled and self.balancer and self.adversarial_weight + self.feature_matching_weight == 0:
            raise LyraError("balancer: adversarial_weight and feature_matching_weight are both 0; nothing to balance against")


@dataclass(frozen=True)
class EMAConfig:
    enabled: bool = _field(False, "keep an exponential moving average of the generator's weights, used for validation, "
                                  "saved in checkpoints and used by `lyra encode/decode`")
    decay: float = _field(0.999, "EMA decay per optimizer step: ema = decay * ema + (1 - decay) * weights")
    start_step: int = _field(1000, "until this step the EMA copies the weights; averaging starts after it")

    def __post_init__(self) -> None:
        _non_negative(self, "start_step")
        _finite(self)
        if not 0.0 <= self.decay < 1.0:
            raise LyraError(f"decay: must be in [0, 1), got {self.decay}")


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str = _field("runs/lyra", "output folder: checkpoints, metrics.jsonl, validation audio")
    seed: int = _field(0, "seed for weights, data order, crops and posterior noise")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the VAE (see `lyra model-info`)"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)

    def __post_init__(self) -> None:
        if not self.run_dir:
            raise LyraError("run_dir: must name a folder")
        if not 0 <= self.seed <= MAX_SEED:
            raise LyraError(f"seed: must be an integer from 0 to 2**63 - 1, got {self.seed}")
        try:   # before any of it is built
            self.model.check_size()
        except LyraError as exc:
            raise LyraError(f"model.{exc}") from None
        longest = max(self.loss.fft_sizes)
        if self.data.segment_length <= longest // 2:
            raise LyraError(
                f"data.segment_length: {self.data.segment_length} samples is too short for the STFT loss's "
                f"largest FFT size {longest}; use more than {longest // 2}"
            )
        if self.loss.stereo != "channels" and self.model.channels != 2:
            raise LyraError(f"loss.stereo: '{self.loss.stereo}' needs a stereo model, got model.channels = {self.model.channels}")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read and validate a TOML run config; every error names `path` and the key."""
        data = read_toml(path)
        try:
            return from_dict(cls, data)
        except LyraError as exc:
            raise LyraError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "config") -> "TrainConfig":
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings; unset values left out), as stored in checkpoints."""
        return _drop_none(to_dict(self))


# ---------------------------------------------------------------------------------------
# Fine-tuning: the run's model and a checkpoint's (`lyra train --init-from CKPT`)
# ---------------------------------------------------------------------------------------
def model_difference(ours: ModelConfig, theirs: ModelConfig, our_name: str, their_name: str) -> str | None:
    """None if the two configs describe the same model, else the first differing key (in
    [model]'s order) with both values: ``model.base_channels is 128 in A, 16 in B``."""
    import json

    for f in dataclasses.fields(ModelConfig):
        a, b = getattr(ours, f.name), getattr(theirs, f.name)
        if a != b:   # shown as in TOML: [1, 2], "snake", true
            return (f"model.{f.name} is {json.dumps(to_dict(a))} in {our_name}, "
                    f"{json.dumps(to_dict(b))} in {their_name}")
    return None


def with_checkpoint_model(cfg: TrainConfig, model_in_config: bool, model: ModelConfig, source: str) -> TrainConfig:
    """The run config for a run that starts from checkpoint `source`, whose model is `model`.

    A config with a [model] table (`model_in_config`) must describe exactly that model: else a
    one-line error names the first differing key. A config without one takes the checkpoint's.
    """
    if not model_in_config:
        try:
            return dataclasses.replace(cfg, model=model)   # validated again, with this model
        except LyraError as exc:
            raise LyraError(f"{source}: with this checkpoint's model, {exc}") from None
    diff = model_difference(cfg.model, model, "the config", "the checkpoint")
    if diff is not None:
        raise LyraError(
            f"{source}: the config's [model] does not describe this checkpoint's model ({diff}); leave the "
            f"[model] table out of the config to take the checkpoint's (`lyra config show CONFIG --init-from "
            f"{source}` then prints it), or copy the checkpoint's values into it"
        )
    return cfg


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


# ---------------------------------------------------------------------------------------
# Command-line overrides and the commented starting config
# ---------------------------------------------------------------------------------------
def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=3e-4", "data.train_dir=x"]` applied to parsed TOML `data` (a new dict).

    Values are read as TOML (``3e-4``, ``true``, ``[1, 2]``, ``"text"``); anything that is not
    valid TOML is taken as a plain string. Keys are checked later, by `from_dict`.
    """
    import copy
    import tomllib

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LyraError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        except RecursionError:
            raise LyraError(f"--set {key}: the value's lists nest too deeply") from None
        except ValueError as exc:   # an integer of more digits than Python converts
            raise LyraError(f"--set {key}: {str(exc).split(';')[0]}") from None
        table = out
        parts = key.split(".")
        for part in parts[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise LyraError(f"--set {item!r}: '{part}' is a value, not a table")
        table[parts[-1]] = value
    return out


DEFAULT_HEADER = ("Lyra training run. `lyra train THIS.toml` trains; `lyra config show THIS.toml` prints the\n"
                  "resolved config. Unset keys take the defaults shown here (the design document's).")


def commented_toml(cfg: TrainConfig, header: str = DEFAULT_HEADER) -> str:
    """`cfg` as a TOML file with each key's help text above it (`lyra config init`)."""
    from lyra.core.toml import dumps

    classes = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "loss": LossConfig,
               "runtime": RuntimeConfig, "logging": LoggingConfig, "checkpoint": CheckpointConfig,
               "adversarial": AdversarialConfig, "ema": EMAConfig}

    def comment(table: str, key: str) -> str:
        if table == "":
            return help_text(TrainConfig, key)
        return help_text(classes[table], key)

    return dumps(to_dict(cfg), comment=comment, header=header)
