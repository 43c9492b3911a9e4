"""`ModelConfig`: the VAE's widths, strides and the registry names of its parts.

Its defaults are the design document's model (255,858,050 parameters); `ModelConfig.small()`
is the tiny model used by tests and the CPU demo. Each field carries the help text `lyra
config init` writes; reading it from TOML is `lyra.core.toml`'s typed reading.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyra.core.errors import LyraError
from lyra.core.toml import from_dict, help_field, read_toml, to_dict


# The most weights a config may ask for (34 GB in float32; the default model has 2.6e8).
MAX_WEIGHTS = 2**33


@dataclass(frozen=True)
class ModelConfig:
    """The VAE: widths, strides and the registry names of its parts.

    Encoder block i maps ``base_channels * ([1] + c_mults)[i]`` channels to
    ``base_channels * c_mults[i]`` and divides time by ``strides[i]``; the decoder mirrors it
    (at ``decoder_base_channels`` instead of ``base_channels`` when that is set).
    The hop (samples per latent frame) is the product of the strides.
    """

    sample_rate: int = help_field(44100, "audio sample rate (Hz)")
    channels: int = help_field(2, "audio channels (2: stereo)")
    base_channels: int = help_field(128, "width of the first encoder stage")
    decoder_base_channels: int = help_field(
        0, "width of the last decoder stage, the others x c_mults (0: base_channels, the encoder's mirror)")
    latent_dim: int = help_field(64, "latent channels")
    c_mults: tuple[int, ...] = help_field((1, 2, 4, 8, 16),
                                          "width multipliers of the encoder blocks (x base_channels)")
    strides: tuple[int, ...] = help_field((2, 4, 4, 8, 8),
                                          "time downsampling of each encoder block (their product is the hop)")
    dilations: tuple[int, ...] = help_field((1, 3, 9), "dilations of the residual units in each block")
    residual_kernel_size: int = help_field(7, "kernel size of the residual units' dilated convolutions")
    logvar_clamp: float = help_field(10.0, "the posterior log-variance is clamped to +-this (posterior = \"logvar\")")
    posterior: typing.Literal["logvar", "softplus"] = help_field(
        "logvar", "\"logvar\": the encoder gives a clamped log-variance; \"softplus\": sigma = softplus(s) + 1e-4 "
        "(stable-audio-tools)")
    decoder_in_kernel: int = help_field(3, "kernel size of the decoder's input convolution (Oobleck: 7)")
    decoder_out_bias: bool = help_field(True, "the decoder's output convolution has a bias (Oobleck: false)")
    final_tanh: bool = help_field(False, "squash the decoded audio with tanh")
    # Registry names of the components; `lyra config init` writes the one help line above the four.
    activation: str = help_field("snake", "registered component names (see `lyra plugins`)")
    residual_unit: str = "residual_unit"
    encoder_block: str = "encoder_block"
    decoder_block: str = "decoder_block"
    bottleneck: str = help_field(
        "vae", "the registered bottleneck: \"vae\" (Gaussian posterior), \"fsq\" or \"rvq\" (integer codes); "
        "its options go in [model.options.NAME]")
    # ``{"aa_snake": {"aa_taps": 25}}`` is the TOML table ``[model.options.aa_snake]``, checked
    # against that factory when the model is built. (Added after the first release:
    # `lyra.model.checkpoint.LATER_OPTIONS` keeps it out of older models' fingerprints.)
    options: dict[str, dict[str, Any]] = help_field(
        default_factory=dict,
        help="options per component, by registered name: [model.options.NAME] goes to component NAME only")
    block_options: dict[str, Any] = help_field(
        default_factory=dict, help="deprecated: options passed to every component (use options)")

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @classmethod
    def small(cls, **overrides: Any) -> "ModelConfig":
        """A tiny model (same hop of 2048) for tests and the CPU demo."""
        base = dict(base_channels=16, latent_dim=16, c_mults=(1, 2, 2, 4, 4))
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_toml(cls, path: str | Path, table: str | None = "model") -> "ModelConfig":
        data = read_toml(path)
        if table is not None:
            data = data.get(table, {})
        where = f"{path}:{table}" if table else str(path)
        cfg = from_dict(cls, data, where)
        try:
            cfg.check_size()
        except LyraError as exc:
            raise LyraError(f"{where}.{exc}") from None
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def __post_init__(self) -> None:
        for key in ("c_mults", "strides", "dilations"):  # lists from Python callers
            object.__setattr__(self, key, tuple(getattr(self, key)))
        self.validate()

    def check_size(self) -> None:
        """Refuse sizes whose weights alone no machine holds, before anything allocates them:
        a lower bound on the built-in architecture's weight count (the default model: 1.6e8 of
        its 2.6e8), by the group of keys that makes most of it. Configs read from TOML are
        checked (`from_toml`, and the run config's [model]); a stored model's config is checked
        against its weights instead (`lyra.model.checkpoint`)."""
        w = [self.base_channels * m for m in (1, *self.c_mults)]   # stage widths
        d = [(self.decoder_base_channels or self.base_channels) * m for m in (1, *self.c_mults)]   # the decoder's
        k = self.residual_kernel_size
        parts = {   # residual units (encoder and decoder), down/upsampling, latent projections
            "base_channels/c_mults/dilations/residual_kernel_size":
                sum(len(self.dilations) * (w[i] ** 2 + d[i] ** 2) * (k + 1) for i in range(len(self.strides))),
            "base_channels/c_mults/strides": sum(2 * (w[i] * w[i + 1] + d[i] * d[i + 1]) * s
                                                 for i, s in enumerate(self.strides)),
            "latent_dim/decoder_in_kernel": (w[-1] * 6 + d[-1] * self.decoder_in_kernel) * self.latent_dim,
        }
        total = sum(parts.values())
        if total > MAX_WEIGHTS:
            keys = max(parts, key=parts.get)
            raise LyraError(f"{keys}: these sizes make a model of more than {total:.2g} weights "
                            f"({4 * total / 1e9:,.0f} GB in float32); at most {MAX_WEIGHTS:.2g} (34 GB) are allowed")

    def validate(self) -> None:
        """Raise a `LyraError` whose message starts with the first bad key."""
        for key in ("sample_rate", "channels", "base_channels", "latent_dim", "residual_kernel_size",
                    "decoder_in_kernel"):
            if getattr(self, key) <= 0:
                raise LyraError(f"{key}: must be positive, got {getattr(self, key)}")
        for key in ("c_mults", "strides", "dilations"):
            values = getattr(self, key)
            if len(values) == 0:
                raise LyraError(f"{key}: must not be empty")
            bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v <= 0]
            if bad:
                raise LyraError(f"{key}: every entry must be a positive integer, got {bad[0]!r}")
        if self.decoder_base_channels < 0:
            raise LyraError(f"decoder_base_channels: must be positive, or 0 for base_channels, got "
                            f"{self.decoder_base_channels}")
        if min(self.strides) < 2:
            raise LyraError(f"strides: every stride must be at least 2, got {min(self.strides)}")
        if len(self.c_mults) != len(self.strides):
            raise LyraError(
                f"c_mults/strides: lengths differ ({len(self.c_mults)} multipliers, "
                f"{len(self.strides)} strides); each encoder block needs one of each"
            )
        for key in ("residual_kernel_size", "decoder_in_kernel"):
            if getattr(self, key) % 2 == 0:
                raise LyraError(f"{key}: must be odd, got {getattr(self, key)}")
        if self.posterior not in ("logvar", "softplus"):
            raise LyraError(f"posterior: expected 'logvar' or 'softplus', got {self.posterior!r}")
        if not math.isfinite(self.logvar_clamp):   # TOML's reader refuses these too; this is for Python callers
            raise LyraError(f"logvar_clamp: must be a finite number, got {self.logvar_clamp}")
        if self.logvar_clamp <= 0:
            raise LyraError(f"logvar_clamp: must be positive, got {self.logvar_clamp}")
        for key in ("activation", "residual_unit", "encoder_block", "decoder_block", "bottleneck"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise LyraError(f"{key}: must be a component name")
        if not isinstance(self.options, dict):
            raise LyraError(f"options: expected a table of tables (one per component name)")
        for name, table in self.options.items():
            if not isinstance(name, str) or not name:
                raise LyraError(f"options: {name!r} is not a component name")
            if not isinstance(table, dict) or not all(isinstance(k, str) for k in table):
                raise LyraError(f"options.{name}: expected a table of option names and values")
        vae = self.options.get("vae", {}) if isinstance(self.options.get("vae"), dict) else {}
        for key in ("posterior", "logvar_clamp"):
            if key in vae:
                raise LyraError(f"options.vae: set '{key}' as model.{key}, not in [model.options.vae]")
        if not isinstance(self.block_options, dict):
            raise LyraError(f"block_options: expected a table")
