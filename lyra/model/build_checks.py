"""The checks a model build makes, each failure one line naming the config key to change.

Before building, `check_components`: every component the config names is registered, and
every ``[model.options.<name>]`` table names one and only options its factory takes. While
building, `create_component`: `registry.create` whose errors start with the config key. After
building, `check_shapes`: every stage holding a component Lyra does not provide runs once on
a one-frame input and must keep its kind's shape contract (the all-built-in default model
skips it). `lyra.model.vae` runs all three; see docs/plugins.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lyra import registry
from lyra.core.errors import LyraError
from lyra.model.config import ModelConfig
from lyra.registry import ComponentError


COMPONENT_KINDS = ("activation", "residual_unit", "encoder_block", "decoder_block", "bottleneck")  # the config keys naming one


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


def create_component(cfg: ModelConfig, kind: str, name: str, **kwargs: Any) -> nn.Module:
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


def check_shapes(model: nn.Module) -> None:
    """Run each stage of the VAE `model` (encoder/decoder block, output activation) that holds
    a component Lyra does not provide once, on the input a one-frame signal gives it, and check
    its output's shape, and that every activation and residual unit inside keeps its input's
    shape.

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
    """`check_shapes` for one stage; raises a one-line `LyraError` naming the component."""
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
