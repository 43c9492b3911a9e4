"""The VAE: a convolutional encoder to a Gaussian posterior over a 64-channel latent, and back.

Shapes for the default model (hop = 2*4*4*8*8 = 2048), T a multiple of the hop:

    encode  [B, 2, T] -> Conv1d(2, 128, 7)                    -> [B, 128, T]
            -> EncoderBlock(s=2) ... EncoderBlock(s=8)          -> [B, 2048, T/2048]
            -> Snake -> Conv1d(2048, H, 3)                      -> h [B, H, T/2048]
            -> bottleneck: vae (H = 128) split                  -> mean, logvar [B, 64, T/2048]
                           fsq/rvq (H = 64)                     -> codes [B, Q, T/2048] (int64)
    decode  [B, 64, F] (vae: the latent; fsq/rvq: the codes' vectors)
            -> Conv1d(64, 2048, 3)                              -> [B, 2048, F]
            -> DecoderBlock(s=8) ... DecoderBlock(s=2)          -> [B, 128, F*2048]
            -> Snake -> Conv1d(128, 2, 7) [-> tanh]             -> [B, 2, F*2048]

The same classes build stable-audio-tools' Oobleck VAE (`configs/stable-audio-open-vae.toml`):
``decoder_block = "oobleck_decoder_block"``, ``decoder_in_kernel = 7``, no bias on the output
conv, and ``posterior = "softplus"`` (sigma = softplus(s) + 1e-4 instead of a clamped logvar).

Latents are self-contained: `encode` right-pads the input with zeros to a multiple of the hop,
so there are ceil(T / hop) frames; `decode(z, length)` crops its F * hop samples to `length`.
Nothing is remembered between the two calls.

Building checks the config's components once, builds them with their
``[model.options.<name>]`` tables (`lyra.registry.component_options`), and then checks the
shapes of every stage holding a component Lyra does not provide (`lyra.model.build_checks`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lyra import registry
from lyra.core.errors import LyraError
from lyra.core.toml import from_dict
from lyra.model.bottlenecks.bottleneck import Bottleneck, Quantized, bottleneck_facts
from lyra.model.bottlenecks.gaussian import Gaussian
from lyra.model.build_checks import check_components, check_shapes, create_component
from lyra.model.compilation import compile_model
from lyra.model.config import ModelConfig


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, head_channels: int) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in (1, *cfg.c_mults)]
        opts = _block_kwargs(cfg)
        self.widths, self.strides = widths, cfg.strides       # for `check_shapes`
        self.conv_in = nn.Conv1d(cfg.channels, widths[0], 7, padding=3)
        self.blocks = nn.ModuleList(
            create_component(cfg, "encoder_block", cfg.encoder_block, in_channels=c_in, out_channels=c_out,
                    stride=s, **opts)
            for c_in, c_out, s in zip(widths[:-1], widths[1:], cfg.strides)
        )
        self.act_out = create_component(cfg, "activation", cfg.activation, channels=widths[-1], **cfg.block_options)
        self.conv_out = nn.Conv1d(widths[-1], head_channels, 3, padding=1)   # the bottleneck's in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)                      # [B, C, T] -> [B, W0, T]
        for block in self.blocks:
            x = block(x)                         # [B, Wi, T'] -> [B, Wi+1, T'/s]
        return self.conv_out(self.act_out(x))    # [B, Wn, F] -> [B, H, F] (vae: H = 2D)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        base = cfg.decoder_base_channels or cfg.base_channels   # 0: the encoder's mirror
        widths = [base * m for m in (1, *cfg.c_mults)][::-1]
        opts = _block_kwargs(cfg)
        self.widths, self.strides = widths, tuple(reversed(cfg.strides))   # for `check_shapes`
        k = cfg.decoder_in_kernel
        self.conv_in = nn.Conv1d(cfg.latent_dim, widths[0], k, padding=k // 2)
        self.blocks = nn.ModuleList(
            create_component(cfg, "decoder_block", cfg.decoder_block, in_channels=c_in, out_channels=c_out,
                    stride=s, **opts)
            for c_in, c_out, s in zip(widths[:-1], widths[1:], self.strides)
        )
        self.act_out = create_component(cfg, "activation", cfg.activation, channels=widths[-1], **cfg.block_options)
        self.conv_out = nn.Conv1d(widths[-1], cfg.channels, 7, padding=3, bias=cfg.decoder_out_bias)
        self.squash = nn.Tanh() if cfg.final_tanh else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)                      # [B, D, F] -> [B, Wn, F]
        for block in self.blocks:
            x = block(x)                         # [B, Wi, T'] -> [B, Wi-1, T'*s]
        return self.squash(self.conv_out(self.act_out(x)))   # [B, W0, F*hop] -> [B, C, F*hop]


class VAE(nn.Module):
    """Encoder + bottleneck + decoder. See the module docstring for shapes.

    The name is historical: the bottleneck is a component (`lyra.model.bottlenecks`), the
    Gaussian posterior (``vae``) by default, or integer codes (``fsq``, ``rvq``, plugins).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        check_components(cfg)
        with registry.component_options(cfg.options) as built:
            bottleneck = build_bottleneck(cfg)
            self.encoder = Encoder(cfg, bottleneck.in_channels)
            self.decoder = Decoder(cfg)
            self.bottleneck = bottleneck        # after the two: the default model's weights keep their order
        unused = [name for name in cfg.options if name not in built]
        if unused:
            raise LyraError(f"model.options.{unused[0]}: this model builds no component named '{unused[0]}' "
                            f"(it builds {', '.join(sorted(built))})")
        check_shapes(self)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def discrete(self) -> bool:
        """Whether files store integer codes (an fsq/rvq bottleneck) rather than float latents."""
        return self.bottleneck.discrete

    def num_frames(self, length: int) -> int:
        """Latent frames for `length` input samples: ceil(length / hop)."""
        return math.ceil(length / self.hop_length)

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T] audio -> the encoder head's output [B, H, ceil(T / hop)], what the bottleneck takes."""
        if x.dim() != 3 or x.shape[1] != self.config.channels:
            raise LyraError(
                f"encode expects audio of shape [batch, {self.config.channels}, time], got {list(x.shape)}"
            )
        if x.shape[-1] < 1:
            raise LyraError("encode needs at least one sample")
        pad = self.num_frames(x.shape[-1]) * self.hop_length - x.shape[-1]
        x = F.pad(x, (0, pad))                   # [B, C, T] -> [B, C, F*hop]
        return self.encoder(x)                   # [B, C, F*hop] -> [B, H, F]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, T] audio -> posterior (mean, logvar), each [B, D, ceil(T / hop)] (the ``vae``
        bottleneck only; `encode_latents` works for every bottleneck).

        The log-variance is the encoder's clamped output, or log((softplus(s) + 1e-4)^2)
        with ``posterior = "softplus"``; either way `sample` and the KL term read it alike.
        """
        if not isinstance(self.bottleneck, Gaussian):
            raise LyraError(f"encode gives a Gaussian posterior; this model's bottleneck is "
                            f"'{self.config.bottleneck}': use encode_latents")
        return self.bottleneck.posterior_of(self.encode_features(x))   # [B, 2D, F] -> 2 x [B, D, F]

    def encode_latents(self, x: torch.Tensor, quantizers: int | None = None) -> torch.Tensor:
        """[B, C, T] audio -> what a .lyra file stores: the posterior mean [B, D, F] (vae), or
        integer codes [B, Q, F] (discrete; the first `quantizers` rows of a residual one)."""
        return self.bottleneck.encode(self.encode_features(x), quantizers)

    def decode_latents(self, stored: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """What `encode_latents` gives (float latents or integer codes) -> [B, C, length] audio."""
        if self.discrete:
            self.bottleneck.check_codes(stored)
        return self.decode(self.bottleneck.decode(stored), length)   # [B, Q, F] codes (or [B, D, F]) -> [B, D, F]

    def decode(self, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """[B, D, F] latent -> [B, C, length] audio (default length: F * hop)."""
        if z.dim() != 3 or z.shape[1] != self.config.latent_dim:
            raise LyraError(
                f"decode expects latents of shape [batch, {self.config.latent_dim}, frames], got {list(z.shape)}"
            )
        full = z.shape[-1] * self.hop_length
        length = full if length is None else int(length)
        if not 0 < length <= full:
            raise LyraError(f"decode: length must be in 1..{full} for {z.shape[-1]} frames, got {length}")
        return self.decoder(z)[..., :length]    # [B, D, F] -> [B, C, F*hop] -> [B, C, length]

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw z = mean + exp(logvar / 2) * eps, differentiable in both."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def reconstruct(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, Quantized]:
        """The training pass of any bottleneck: (reconstruction [B, C, T], the bottleneck's
        `Quantized`), with the bottleneck's per-example `noise` (None: deterministic)."""
        out = self.bottleneck(self.encode_features(x), noise)   # [B, C, T] -> [B, H, F] -> z [B, D, F]
        return self.decode(out.z, x.shape[-1]), out

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass. The ``vae`` bottleneck: (reconstruction [B, C, T], mean, logvar), a
        posterior draw from `generator`; others: (reconstruction, `Quantized`), as `reconstruct`."""
        if not isinstance(self.bottleneck, Gaussian):
            return self.reconstruct(x)
        mean, logvar = self.encode(x)
        z = self.sample(mean, logvar, generator)
        return self.decode(z, x.shape[-1]), mean, logvar

    def compile(self, **options: Any) -> "VAE":
        """Compile the model in place, stage by stage (see `lyra.model.compilation`); returns self.

        Options: ``freeze`` (inference only: weights become constants), ``dynamic``, ``mode``,
        ``backend``, ``fullgraph`` (default True: a graph break is an error).
        """
        return compile_model(self, **options)


def build_bottleneck(cfg: ModelConfig) -> Bottleneck:
    """The config's bottleneck, checked against the contract (`lyra.model.bottlenecks.bottleneck`).
    The ``vae`` bottleneck takes its options from the model config's own keys."""
    own = dict(posterior=cfg.posterior, logvar_clamp=cfg.logvar_clamp) if cfg.bottleneck == "vae" else {}
    built = create_component(cfg, "bottleneck", cfg.bottleneck, latent_dim=cfg.latent_dim, **own)
    problem = bottleneck_facts(built)
    if problem:
        found = registry.component("bottleneck", cfg.bottleneck)
        raise LyraError(f"model.bottleneck: {found.label} {problem}")
    return built


def _block_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(dilations=cfg.dilations, kernel_size=cfg.residual_kernel_size,
                activation=cfg.activation, residual_unit=cfg.residual_unit, **cfg.block_options)


def build_model(config: ModelConfig | dict | None = None, *, compile: bool = False,
                **compile_kwargs: Any) -> VAE:
    """Build the VAE. No argument: the design document's default model (255,858,050 parameters).

    `config` may be a `ModelConfig` or a plain dict (as stored in checkpoints). With
    ``compile=True`` the model is compiled stage by stage (see `lyra.model.compilation`), with
    `compile_kwargs` as its options.
    """
    if isinstance(config, dict):
        config = from_dict(ModelConfig, config, "model")
    model = VAE(config)
    if compile:
        model.compile(**compile_kwargs)
    return model
