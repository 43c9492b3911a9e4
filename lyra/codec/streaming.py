"""Chunked (streaming) encode and decode of the VAE, equal to the whole-signal results.

The model is non-causal, so streaming runs it on overlapping segments and crops the overlap
away, with the engine of `lyra.audio.overlap` (`OverlapStream`). This module supplies what
that engine needs to know about the model: the context on each side, its receptive field
computed from its convolution layers (`receptive_field`, `streaming_plan`; a model whose layers
streaming cannot vouch for is refused: `check_local_in_time`), and the operators: the encoder
on a segment (`encode_stream`) and the decoder stage by stage, cropping after each stage to
what the later ones still need (`StagedDecoder`, `decode_stream`). Segments fall on whole
latent frames, so results equal the whole-signal ones up to float rounding, for any chunk
size, in the memory of one segment. `lyra.codec.codec.Codec` is the friendlier door to the
same streams; see docs/python-api.md.

    for frames in encode_stream(model, audio_blocks, chunk_frames=200): ...   # [D, n] each
    for audio in decode_stream(model, latent_blocks, chunk_frames=200, length=T): ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from lyra import registry
from lyra.core.errors import LyraError
from lyra.codec.inference import encode_latents, model_device_dtype
from lyra.model.vae import VAE, Decoder, Encoder
from lyra.audio.overlap import Context, OverlapStream, crop_stream, run_stream

# What streaming understands without being told. Time-mixing layers it measures (with their
# base class's forward: a subclass may only change parameters or buffers) ...
_CONVS = (nn.Conv1d, nn.ConvTranspose1d)
_CONV_PADDING = ("zeros", "reflect", "replicate")  # not "circular": it wraps the segment, not the signal
# ... and torch layers that are pointwise in time (or only hold other modules).
_LOCAL = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity, nn.Dropout,
          nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
          nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid)
_LYRA = (VAE, Encoder, Decoder)  # Lyra's own containers: they only chain their stages
# Forward hooks that only recompute a weight before the forward (the older weight/spectral
# norm form: weight_g/weight_v, weight_orig/weight_u; pruning masks), never touching the signal.
_WEIGHT_HOOKS = (WeightNorm, SpectralNorm, BasePruningMethod)


# ---------------------------------------------------------------------------------------
# Receptive field
# ---------------------------------------------------------------------------------------
def check_local_in_time(module: nn.Module) -> None:
    """Refuse (one-line `LyraError`) a module whose time mixing streaming cannot vouch for.

    An allow-list: every module inside must be a convolution streaming measures, a torch layer
    known to be pointwise in time, one of Lyra's containers, or built by a component registered
    ``streamable=True``. Such a component vouches for the modules of its own it holds, but not
    for torch layers outside the allow-list (a `GroupNorm` inside still refuses the model).
    Parametrisations (`torch.nn.utils.parametrizations.weight_norm`, `spectral_norm`, any
    `register_parametrization`) compute a module's weights, never touching the signal, so a
    parametrised module is judged as its own class; so are weight-only forward hooks (the older
    `torch.nn.utils.weight_norm`/`spectral_norm`, pruning). Any other forward hook on a torch or
    Lyra module refuses the model: it changes what the module computes.
    """
    def visit(mod: nn.Module, path: str, vouched: bool) -> None:
        built = registry.built_by(mod)
        if built:
            refused = [c for c in built if not c.streamable]
            if refused:
                c = refused[0]
                raise LyraError(f"cannot stream this model: {c.kind} '{c.name}' ({c.origin}) at {path} is "
                                "not registered as streamable (it may mix time in ways streaming cannot "
                                "measure); if it mixes time only through the nn.Conv1d/nn.ConvTranspose1d "
                                f"layers it holds, declare it with registry.register('{c.kind}', '{c.name}', "
                                "..., streamable=True); otherwise encode/decode without --stream")
            vouched = True
        elif not _understood(mod, vouched):
            raise LyraError(f"cannot stream this model: {path} is a {type(mod).__name__}, which is not known "
                            "to be local in time; encode/decode without --stream")
        _check_hooks(mod, path)
        for name, child in mod.named_children():
            if name == "parametrizations" and parametrize.is_parametrized(mod):
                continue                  # weight computations: they never see the signal
            visit(child, f"{path}.{name}", vouched)

    visit(module, type(module).__name__, False)


def _own_class(mod: nn.Module) -> type:
    """`mod`'s class, seen through the subclass `register_parametrization` swaps in."""
    kind = type(mod)
    return kind.__bases__[0] if parametrize.is_parametrized(mod) else kind


def _understood(mod: nn.Module, vouched: bool) -> bool:
    kind = _own_class(mod)
    if isinstance(mod, _CONVS):
        base = nn.Conv1d if isinstance(mod, nn.Conv1d) else nn.ConvTranspose1d
        return kind.forward is base.forward and mod.padding_mode in _CONV_PADDING
    if kind in _LOCAL or kind in _LYRA:
        return True
    # A streamable component's own helper modules are covered by its word; torch's are not.
    return vouched and not kind.__module__.startswith("torch.")


def _check_hooks(mod: nn.Module, path: str) -> None:
    """Refuse a forward hook (other than a weight-only one) on a torch or Lyra module: streaming
    vouches for those classes as written. A component's own classes are covered by its word."""
    kind = _own_class(mod)
    if not kind.__module__.startswith(("torch.", "lyra.")):
        return
    for when, hooks in (("pre-hook", mod._forward_pre_hooks), ("hook", mod._forward_hooks)):
        for hook in hooks.values():
            if not isinstance(hook, _WEIGHT_HOOKS):
                name = getattr(hook, "__qualname__", type(hook).__qualname__)
                raise LyraError(f"cannot stream this model: {path} (a {kind.__name__}) has a forward {when} "
                                f"({name}), which may mix time in ways streaming cannot measure; "
                                "encode/decode without --stream")


def receptive_field(module: nn.Module, probe: torch.Tensor, signal_axis: str) -> tuple[int, int]:
    """Samples of signal context (left, right) that `module`'s outputs need, from its conv layers.

    Runs `module` once on `probe` (eagerly, compiled stages included) with hooks that record
    each `Conv1d`/`ConvTranspose1d` input and output length. Lengths give every layer's scale
    `S` (signal samples per position: the module's input for an encoder, its output for a
    decoder, as `signal_axis` says), and each layer widens the dependency window of a position
    by (in signal samples):

        Conv1d(k, s, d, p)           left p*S_in            right ((k-1)d - p - (s-1))*S_in
        ConvTranspose1d(k, s, d, p)  left ((k-1)d - p)*S_out right (p + s - 1)*S_out

    Windows compose additively, and a residual branch's window contains the skip's, so the sum
    over all conv layers bounds the true receptive field from above (tight for a chain; a
    block with parallel branches is over-counted, which is safe). s, d and p are the module's
    own; k is the length of the weight its forward applied (a parametrised or weight-normed
    conv computes it on the way). Everything else must be local in time (`check_local_in_time`).
    """
    check_local_in_time(module)
    records: list[tuple[nn.Module, int, int, int]] = []

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        records.append((mod, _taps(mod), args[0].shape[-1], out.shape[-1]))

    convs = [m for m in module.modules() if isinstance(m, _CONVS)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode(), torch.compiler.set_stance("force_eager"):
            out = module(probe)
    finally:
        for h in handles:
            h.remove()
    signal = probe.shape[-1] if signal_axis == "input" else out.shape[-1]
    left = right = Fraction(0)
    for conv, k, n_in, n_out in records:
        (s,), (d,) = conv.stride, conv.dilation
        span = (k - 1) * d
        p = _left_padding(conv, span)
        if isinstance(conv, nn.ConvTranspose1d):
            scale = Fraction(signal, n_out)
            left += max(0, span - p) * scale
            right += max(0, p + s - 1) * scale
        else:
            scale = Fraction(signal, n_in)
            left += max(0, p) * scale
            right += max(0, span - p - (s - 1)) * scale
    return math.ceil(left), math.ceil(right)


def _taps(conv: nn.Module) -> int:
    """The kernel length `conv`'s forward applies: its weight's (as computed by a parametrisation
    or a weight-norm hook, which may differ from `kernel_size`), else `kernel_size`."""
    weight = getattr(conv, "weight", None)
    return weight.shape[-1] if isinstance(weight, torch.Tensor) and weight.dim() == 3 else conv.kernel_size[0]


def _left_padding(conv: nn.Module, span: int) -> int:
    if conv.padding == "same":
        return span // 2
    if conv.padding == "valid":
        return 0
    return conv.padding[0]


@dataclass(frozen=True)
class StreamingPlan:
    """What streaming needs to know about a model, measured once (`streaming_plan`)."""

    encoder: Context                  # audio frames (hops) of context per latent frame
    decoder: Context                  # latent frames of context per decoded hop of audio
    staged: bool                      # the decoder runs as [conv_in, *blocks, head] (StagedDecoder)
    per_frame: tuple[int, ...]        # positions per latent frame after each decoder stage
    needs: tuple[Context, ...]        # latent frames the stages after each stage still need


def streaming_plan(model: VAE) -> StreamingPlan:
    """The model's `StreamingPlan`, measured on the first call (eagerly) and kept on the model.

    It depends on the model's structure only, not on its weights, device or compilation.
    """
    plan = model.__dict__.get("_streaming_plan")
    if plan is None:
        plan = _measure(model)
        model.__dict__["_streaming_plan"] = plan
    return plan


def _measure(model: VAE) -> StreamingPlan:
    hop, (device, dtype) = model.hop_length, model_device_dtype(model)
    probe = torch.zeros(1, model.config.channels, 2 * hop, device=device, dtype=dtype)
    left, right = receptive_field(model.encoder, probe, "input")
    encoder = Context(math.ceil(left / hop), math.ceil(right / hop))
    probe = torch.zeros(1, model.config.latent_dim, 2, device=device, dtype=dtype)
    left, right = receptive_field(model.decoder, probe, "output")
    decoder = Context(math.ceil(left / hop), math.ceil(right / hop))

    stages = decoder_stages(model.decoder)
    probe = torch.randn(1, model.config.latent_dim, 2, device=device, dtype=dtype,
                        generator=torch.Generator(device=device).manual_seed(0))
    with torch.inference_mode(), torch.compiler.set_stance("force_eager"):
        staged = stages is not None and torch.allclose(
            nn.Sequential(*stages)(probe), model.decoder(probe), atol=1e-5, rtol=1e-4)
        stages = stages if staged else [model.decoder]
        per_frame, needs = [], []
        x = probe
        for i, stage in enumerate(stages):
            x = stage(x)                                   # [1, W, 2 * per_frame]
            per_frame.append(x.shape[-1] // 2)
            rest = nn.Sequential(*stages[i + 1:])
            left, right = receptive_field(rest, x, "output") if i + 1 < len(stages) else (0, 0)
            needs.append(Context(math.ceil(left / hop), math.ceil(right / hop)))
    return StreamingPlan(encoder, decoder, staged, tuple(per_frame), tuple(needs))


def encoder_context(model: VAE) -> Context:
    """Audio frames (hops) of context each latent frame needs on each side."""
    return streaming_plan(model).encoder


def decoder_context(model: VAE) -> Context:
    """Latent frames of context each decoded hop of audio needs on each side."""
    return streaming_plan(model).decoder


# ---------------------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------------------
def encode_stream(model: VAE, blocks: Iterable[torch.Tensor], chunk_frames: int,
                  quantizers: int | None = None) -> Iterator[torch.Tensor]:
    """What a .lyra file stores, chunk by chunk: [C, n] audio blocks -> [D, f] posterior means
    (vae), or [Q, f] int64 codes (a discrete bottleneck, which acts on each frame alone).

    The concatenated output equals ``model.encode_latents(whole, quantizers)[0]`` (ceil(T / hop) frames).
    """
    model.bottleneck.check_quantizers(quantizers)

    def encode(segment: torch.Tensor, keep: slice) -> torch.Tensor:
        return encode_latents(model, segment[None], quantizers)[0, :, keep]   # [C, n] -> [D|Q, kept frames]

    stream = OverlapStream(encode, model.hop_length, encoder_context(model), chunk_frames)
    return run_stream(stream, blocks)


def decode_stream(model: VAE, latents: Iterable[torch.Tensor], chunk_frames: int,
                  length: int | Callable[[], int] | None = None) -> Iterator[torch.Tensor]:
    """Audio, chunk by chunk: [D, f] latent blocks (or [Q, f] integer codes of a discrete
    model) -> [C, n] audio blocks.

    The concatenated output equals ``model.decode_latents(whole, length)[0]``. `length` (samples,
    default: frames * hop) may be a callable, asked once the latents are exhausted: a streamed
    `.lyra` file records its length only at its end.
    """
    if model.discrete:   # codes -> their vectors, block by block (the bottleneck acts on each frame alone)
        latents = (codes_to_latents(model, codes) for codes in latents)
    decoder = StagedDecoder(model)
    stream = OverlapStream(decoder, 1, decoder.context, chunk_frames)
    return crop_stream(run_stream(stream, latents), length, slack=model.hop_length)


def codes_to_latents(model: VAE, codes: torch.Tensor) -> torch.Tensor:
    """[Q, f] integer codes -> [D, f] float32 latents on the CPU (what the decoder takes)."""
    device, _ = model_device_dtype(model)
    with torch.inference_mode():
        model.bottleneck.check_codes(codes[None])
        return model.bottleneck.decode(codes[None].to(device))[0].float().cpu()   # [1, Q, f] -> [D, f]


class StagedDecoder:
    """The decoder run on a segment of latent frames, cropping as it goes.

    Most of the decoder's receptive field comes from its first, low-rate stages, while most
    of its cost is in the last, high-rate ones. So after each stage (input conv, each block,
    output head) the intermediate is cropped to the frames the *remaining* stages still need
    around the kept ones: the expensive stages see little more than the kept frames. Crops
    fall on whole frames, so every later layer stays in phase. If the decoder is not the plain
    sequence of those stages, it runs whole (the same result, without the saving). The stages
    are the model's own modules, so compiled stages run compiled.
    """

    def __init__(self, model: VAE) -> None:
        plan = streaming_plan(model)
        self.hop = model.hop_length
        self._device, self._dtype = model_device_dtype(model)
        self.stages = decoder_stages(model.decoder) if plan.staged else [model.decoder]
        self.per_frame, self.needs = plan.per_frame, plan.needs
        self.context = plan.decoder

    def __call__(self, segment: torch.Tensor, keep: slice) -> torch.Tensor:
        n = segment.shape[-1]                                  # frames in the segment
        a, b = keep.start, n if keep.stop is None else keep.stop
        x = segment.to(device=self._device, dtype=self._dtype)[None]   # [D, n] -> [1, D, n]
        first = 0                                              # segment frame where x starts
        with torch.inference_mode():
            for stage, per_frame, need in zip(self.stages, self.per_frame, self.needs):
                x = stage(x)                                   # [1, W, (frames) * per_frame]
                lo, hi = max(first, a - need.left), min(n, b + need.right)
                x = x[..., (lo - first) * per_frame:(hi - first) * per_frame]
                first = lo
        return x[0].float().cpu()                              # [C, (b - a) * hop]


def decoder_stages(dec: nn.Module) -> list[nn.Module] | None:
    """[conv_in, *blocks, head] when the decoder is built like `lyra.model.vae.Decoder`."""
    if not all(hasattr(dec, k) for k in ("conv_in", "blocks", "act_out", "conv_out", "squash")):
        return None
    return [dec.conv_in, *dec.blocks, nn.Sequential(dec.act_out, dec.conv_out, dec.squash)]
