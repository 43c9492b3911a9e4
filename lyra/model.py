"""The VAE: a convolutional encoder to a Gaussian posterior over a 64-channel latent, and back.

Shapes for the default model (hop = 2*4*4*8*8 = 2048), T a multiple of the hop:

    encode  [B, 2, T] -> Conv1d(2, 128, 7)                    -> [B, 128, T]
            -> EncoderBlock(s=2) ... EncoderBlock(s=8)          -> [B, 2048, T/2048]
            -> Snake -> Conv1d(2048, 128, 3) -> split           -> mean, logvar [B, 64, T/2048]
    decode  [B, 64, F] -> Conv1d(64, 2048, 3)                   -> [B, 2048, F]
            -> DecoderBlock(s=8) ... DecoderBlock(s=2)          -> [B, 128, F*2048]
            -> Snake -> Conv1d(128, 2, 7) [-> tanh]             -> [B, 2, F*2048]

The same classes build stable-audio-tools' Oobleck VAE (`configs/stable-audio-open-vae.toml`):
``decoder_block = "oobleck_decoder_block"``, ``decoder_in_kernel = 7``, no bias on the output
conv, and ``posterior = "softplus"`` (sigma = softplus(s) + 1e-4 instead of a clamped logvar).

Latents are self-contained: `encode` right-pads the input with zeros to a multiple of the hop,
so there are ceil(T / hop) frames; `decode(z, length)` crops its F * hop samples to `length`.
Nothing is remembered between the two calls.

Building checks the config's components once (`check_components`: names, options), builds
them with their ``[model.options.<name>]`` tables (`lyra.registry.component_options`), and
then runs every stage that holds a component Lyra does not provide on a one-frame input
(`_check_shapes`; the all-built-in default model skips it): each failure is one line naming
the config key and the component.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from lyra import registry
from lyra.compilation import compile_model
from lyra.config import ModelConfig
from lyra.errors import LyraError
from lyra.registry import ComponentError


SOFTPLUS_FLOOR = 1e-4  # the smallest sigma of the "softplus" posterior


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in (1, *cfg.c_mults)]
        opts = _block_kwargs(cfg)
        self.widths, self.strides = widths, cfg.strides       # for `_check_shapes`
        self.conv_in = nn.Conv1d(cfg.channels, widths[0], 7, padding=3)
        self.blocks = nn.ModuleList(
            _create(cfg, "encoder_block", cfg.encoder_block, in_channels=c_in, out_channels=c_out,
                    stride=s, **opts)
            for c_in, c_out, s in zip(widths[:-1], widths[1:], cfg.strides)
        )
        self.act_out = _create(cfg, "activation", cfg.activation, channels=widths[-1], **cfg.block_options)
        self.conv_out = nn.Conv1d(widths[-1], 2 * cfg.latent_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)                      # [B, C, T] -> [B, W0, T]
        for block in self.blocks:
            x = block(x)                         # [B, Wi, T'] -> [B, Wi+1, T'/s]
        return self.conv_out(self.act_out(x))    # [B, Wn, F] -> [B, 2D, F]


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in (1, *cfg.c_mults)][::-1]
        opts = _block_kwargs(cfg)
        self.widths, self.strides = widths, tuple(reversed(cfg.strides))   # for `_check_shapes`
        k = cfg.decoder_in_kernel
        self.conv_in = nn.Conv1d(cfg.latent_dim, widths[0], k, padding=k // 2)
        self.blocks = nn.ModuleList(
            _create(cfg, "decoder_block", cfg.decoder_block, in_channels=c_in, out_channels=c_out,
                    stride=s, **opts)
            for c_in, c_out, s in zip(widths[:-1], widths[1:], self.strides)
        )
        self.act_out = _create(cfg, "activation", cfg.activation, channels=widths[-1], **cfg.block_options)
        self.conv_out = nn.Conv1d(widths[-1], cfg.channels, 7, padding=3, bias=cfg.decoder_out_bias)
        self.squash = nn.Tanh() if cfg.final_tanh else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)                      # [B, D, F] -> [B, Wn, F]
        for block in self.blocks:
            x = block(x)                         # [B, Wi, T'] -> [B, Wi-1, T'*s]
        return self.squash(self.conv_out(self.act_out(x)))   # [B, W0, F*hop] -> [B, C, F*hop]


class VAE(nn.Module):
    """Encoder + decoder + the Gaussian posterior. See the module docstring for shapes."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        check_components(cfg)
        with registry.component_options(cfg.options) as built:
            self.encoder = Encoder(cfg)
            self.decoder = Decoder(cfg)
        unused = [name for name in cfg.options if name not in built]
        if unused:
            raise LyraError(f"model.options.{unused[0]}: this model builds no component named '{unused[0]}' "
                            f"(it builds {', '.join(sorted(built))})")
        _check_shapes(self)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def num_frames(self, length: int) -> int:
        """Latent frames for `length` input samples: ceil(length / hop)."""
        return math.ceil(length / self.hop_length)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, T] audio -> posterior (mean, logvar), each [B, D, ceil(T / hop)].

        The log-variance is the encoder's clamped output, or log((softplus(s) + 1e-4)^2)
        with ``posterior = "softplus"``; either way `sample` and the KL term read it alike.
        """
        if x.dim() != 3 or x.shape[1] != self.config.channels:
            raise LyraError(
                f"encode expects audio of shape [batch, {self.config.channels}, time], got {list(x.shape)}"
            )
        if x.shape[-1] < 1:
            raise LyraError("encode needs at least one sample")
        pad = self.num_frames(x.shape[-1]) * self.hop_length - x.shape[-1]
        x = F.pad(x, (0, pad))                   # [B, C, T] -> [B, C, F*hop]
        h = self.encoder(x)                      # [B, C, F*hop] -> [B, 2D, F]
        mean, spread = rearrange(h, "b (two d) f -> two b d f", two=2)  # [B, 2D, F] -> 2 x [B, D, F]
        if self.config.posterior == "softplus":  # stable-audio-tools: sigma = softplus(s) + 1e-4
            return mean, 2 * torch.log(F.softplus(spread) + SOFTPLUS_FLOOR)
        clamp = self.config.logvar_clamp
        return mean, spread.clamp(-clamp, clamp)

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

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass: (reconstruction [B, C, T], mean, logvar)."""
        mean, logvar = self.encode(x)
        z = self.sample(mean, logvar, generator)
        return self.decode(z, x.shape[-1]), mean, logvar

    def compile(self, **options: Any) -> "VAE":
        """Compile the model in place, stage by stage (see `lyra.compilation`); returns self.

        Options: ``freeze`` (inference only: weights become constants), ``dynamic``, ``mode``,
        ``backend``, ``fullgraph`` (default True: a graph break is an error).
        """
        return compile_model(self, **options)


COMPONENT_KINDS = ("activation", "residual_unit", "encoder_block", "decoder_block")  # the config keys naming one


def check_components(cfg: ModelConfig) -> None:
    """What can be checked without building: every component the config names is registered,
    and every ``[model.options.<name>]`` table names a registered component and only options its
    factory takes. A one-line `LyraError` starting with the config key."""
    for kind in COMPONENT_KINDS:
        try:
            registry.component(kind, getattr(cfg, kind))
        except LyraError as exc:
            raise LyraError(f"model.{kind}: {exc}") from None
    for name, table in cfg.options.items():
        try:
            found = registry.named(name)
        except LyraError as exc:
            raise LyraError(f"model.options.{name}: {exc}") from None
        for component in found:
            for key in table:
                problem = component.option_problem(key)
                if problem:
                    raise LyraError(f"model.options.{name}: {problem}")


def _block_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(dilations=cfg.dilations, kernel_size=cfg.residual_kernel_size,
                activation=cfg.activation, residual_unit=cfg.residual_unit, **cfg.block_options)


def _create(cfg: ModelConfig, kind: str, name: str, **kwargs: Any) -> nn.Module:
    """`registry.create` for the component config key `kind` names; errors start with the key
    the user has to change (see `_config_key`)."""
    try:
        return registry.create(kind, name, **kwargs)  # checks the call, and that it built an nn.Module
    except ComponentError as exc:
        where = _config_key(cfg, kind, exc.component, exc.key)
        hint = ("; block_options go to every component and are deprecated: set each option in its component's "
                "table, [model.options.<name>]" if where == "model.block_options" else "")
        raise LyraError(f"{where}: {exc}{hint}") from None
    except LyraError as exc:
        raise LyraError(f"model.{kind}: {exc}") from None


def _config_key(cfg: ModelConfig, outer: str, component: registry.Component, key: str | None = None) -> str:
    """The config key behind a failure of `component` (built inside the component config key
    `outer` names): the option's table when `key` is an option set there, else the key naming
    the component, else `outer` (a component a block builds by a name of its own)."""
    if key is not None and key in cfg.options.get(component.name, {}):
        return f"model.options.{component.name}"
    if key is not None and key in cfg.block_options:
        return "model.block_options"
    if component.kind in COMPONENT_KINDS and getattr(cfg, component.kind) == component.name:
        return f"model.{component.kind}"
    return f"model.{outer}"


# Shape contracts of the kinds whose output keeps the input's shape (blocks are checked by stage).
_SHAPE_KEEPING = ("activation", "residual_unit")


def _check_shapes(model: VAE) -> None:
    """Run each stage (encoder/decoder block, output activation) that holds a component Lyra
    does not provide once, on the input a one-frame signal gives it, and check its output's
    shape, and that every activation and residual unit inside keeps its input's shape.

    Runs without gradients, in eval mode, with the random state restored afterwards, so the
    build is otherwise unchanged. Skipped on the ``meta`` device (nothing to run: the real
    build checks) and for stages made of built-ins only (so the default model costs nothing).
    """
    cfg = model.config
    param = next(model.parameters(), None)
    if param is None or param.device.type == "meta":
        return
    enc, dec = model.encoder, model.decoder
    hop = cfg.hop_length
    stages = []   # (where, config key, module, input shape, expected output shape)
    length = hop
    for i, (block, s) in enumerate(zip(enc.blocks, enc.strides)):
        stages.append((f"encoder.blocks.{i}", "encoder_block", block, (1, enc.widths[i], length),
                       (1, enc.widths[i + 1], length // s)))
        length //= s
    stages.append(("encoder.act_out", "activation", enc.act_out, (1, enc.widths[-1], 1), (1, enc.widths[-1], 1)))
    length = 1
    for i, (block, s) in enumerate(zip(dec.blocks, dec.strides)):
        stages.append((f"decoder.blocks.{i}", "decoder_block", block, (1, dec.widths[i], length),
                       (1, dec.widths[i + 1], length * s)))
        length *= s
    stages.append(("decoder.act_out", "activation", dec.act_out, (1, dec.widths[-1], hop), (1, dec.widths[-1], hop)))
    devices = [param.device] if param.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        for where, kind, stage, shape, expected in stages:
            if all(c.provider == registry.BUILTIN_PROVIDER for m in stage.modules() for c in registry.built_by(m)):
                continue
            _check_stage(cfg, where, kind, stage, torch.zeros(shape, device=param.device, dtype=param.dtype),
                         expected)


def _check_stage(cfg: ModelConfig, where: str, kind: str, stage: nn.Module, x: torch.Tensor,
                 expected: tuple[int, ...]) -> None:
    """`_check_shapes` for one stage; raises a one-line `LyraError` naming the component."""
    paths = {m: f"{where}.{name}" if name else where for name, m in stage.named_modules()}
    running: list[tuple[nn.Module, Any]] = []   # the components entered and not yet left (and their input's
                                                # shape), innermost last

    def component(module: nn.Module) -> registry.Component:
        return registry.built_by(module)[-1]   # the outermost factory that returned it

    def fail(module: nn.Module, what: str) -> LyraError:
        found = component(module)
        return LyraError(f"{_config_key(cfg, kind, found)}: {found.label} {what} (at {paths[module]})")

    def shape(value: Any) -> Any:
        return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__

    def enter(module: nn.Module, args: tuple[Any, ...]) -> None:
        running.append((module, shape(args[0]) if args else None))

    def leave(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        _, given = running.pop()
        if component(module).kind in _SHAPE_KEEPING:
            got = shape(out)
            if given is None or got != given:
                raise fail(module, f"must keep its input's shape [B, C, T]: {given} in, {got} out")

    tagged = [m for m in stage.modules() if registry.built_by(m)]
    handles = [h for m in tagged for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    modes = {m: m.training for m in stage.modules()}
    stage.eval()
    try:
        out = stage(x)
    except LyraError:
        raise
    except Exception as exc:
        culprit, given = running[-1] if running else (stage, list(x.shape))
        text = str(exc).strip().splitlines()
        raise fail(culprit, f"fails on a {given} input: "
                            f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")) from None
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.training = training
    got = shape(out)
    if got != list(expected):
        c_in, c_out = x.shape[1], expected[1]
        contract = ("[B, C, T] -> [B, C, T]" if kind == "activation" else
                    f"[B, {c_in}, T] -> [B, {c_out}, T{'/' if kind == 'encoder_block' else '*'}"
                    f"{max(x.shape[2], expected[2]) // min(x.shape[2], expected[2])}]")
        raise fail(stage, f"must map {contract}: {list(x.shape)} in, {got} out")


def build_model(config: ModelConfig | dict | None = None, *, compile: bool = False,
                **compile_kwargs: Any) -> VAE:
    """Build the VAE. No argument: the design document's default model (255,858,050 parameters).

    `config` may be a `ModelConfig` or a plain dict (as stored in checkpoints). With
    ``compile=True`` the model is compiled stage by stage (see `lyra.compilation`), with
    `compile_kwargs` as its options.
    """
    if isinstance(config, dict):
        from lyra.config import from_dict
        config = from_dict(ModelConfig, config, "model")
    model = VAE(config)
    if compile:
        model.compile(**compile_kwargs)
    return model
