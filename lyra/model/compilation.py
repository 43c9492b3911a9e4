"""How Lyra compiles a model: stage by stage, each stage with a code object of its own.

The unit of compilation is the *stage*: every encoder and decoder block, the output
activation of the encoder and of the decoder (the decoder's runs at the full sample rate), and
a bottleneck with weights (its training pass: fsq's projections, rvq's codebooks).
Everything the stages leave out is a single convolution, which inductor would call as an
external kernel anyway, so compiling the whole encoder in one graph fuses nothing more (the two
run equally fast: `tools/compile_ab.py`, BENCHMARKS.md); and stages are what the streaming
decoder runs one at a time (`lyra.codec.streaming.StagedDecoder`).

Dynamo caches compiled graphs per *code object*, at most ``recompile_limit`` (8) of them, and
past that runs the function eagerly with only a warning. All blocks of a class share their
``forward``'s code object and every block has different widths, so compiling blocks with
`nn.Module.compile` runs out after one training step and one validation pass. Here each stage
is called through its own copy of a two-line trampoline, so its cache holds its own graphs
only: one per (grad mode, train/eval, dtype) in use, each with static shapes first and then
one graph with a dynamic time axis (dynamo's automatic dynamic shapes) for any other length.
A stage's graphs therefore stay well under the limit in every cycle Lyra runs: training steps
with validation in between, whole files of any length, streamed chunks of any size.

Stages compile with ``fullgraph=True``: a graph break is an error, never a silent fallback to
eager. A stage holding a component registered with ``compile_safe=False`` stays eager (with a
warning). Compiled stages run through `nn.Module`'s own hook (``_compiled_call_impl``), so
hooks, `state_dict` and `.to()` behave as usual; a deep copy of the model is an eager model.

``freeze=True`` is for inference only: inductor then treats the weights as constants (folds
them, and on CPU prepacks them for oneDNN), so weights changed after the first call are not
seen.
"""

from __future__ import annotations

import types
import warnings
from typing import Any

import torch
from torch import nn

from lyra import registry


def stages(model: nn.Module) -> dict[str, nn.Module]:
    """The units `compile_model` compiles, by their path in the model, in the order data flows."""
    names = [f"encoder.blocks.{i}" for i in range(len(model.encoder.blocks))] + ["encoder.act_out"]
    names += [f"decoder.blocks.{i}" for i in range(len(model.decoder.blocks))] + ["decoder.act_out"]
    if next(model.bottleneck.parameters(), None) is not None:   # fsq/rvq projections, codebooks (vae: none)
        names.insert(names.index("decoder.blocks.0"), "bottleneck")
    return {name: model.get_submodule(name) for name in names}


def compile_model(model: nn.Module, *, freeze: bool = False, dynamic: bool | None = None,
                  mode: str | None = None, backend: str = "inductor", fullgraph: bool = True) -> nn.Module:
    """Compile every stage of `model` in place (see the module docstring); returns the model."""
    options = {"freezing": True} if freeze else None
    eager, unsafe = [], {}
    units = stages(model)
    for name, unit in units.items():
        found = registry.compile_unsafe(unit)
        if found:
            eager.append(name)
            unsafe.update((c.key, c) for c in found)
            continue
        compile_stage(unit, name, dynamic=dynamic, mode=mode, backend=backend, fullgraph=fullgraph,
                      options=options)
    if eager:
        names = ", ".join(f"{c.kind} '{c.name}' ({c.origin})" for c in unsafe.values())
        warnings.warn(f"{len(eager)} of {len(units)} stages left eager ({', '.join(eager)}): they hold "
                      f"{names}, registered as not compile-safe", RuntimeWarning, stacklevel=3)
    return model


def compile_stage(module: nn.Module, name: str, **compile_kwargs: Any) -> nn.Module:
    """`torch.compile` `module`'s call in place, through a code object no other module shares.

    `name` (the stage's path, say ``decoder.blocks.3``) names the code object: dynamo keys
    its automatic-dynamic-shape decisions by code name, and shows the name in its logs.
    """
    code = _call.__code__.replace(co_name=f"stage[{name}]", co_qualname=f"stage[{name}]")
    own = types.FunctionType(code, _call.__globals__, code.co_name)
    module._compiled_call_impl = torch.compile(types.MethodType(own, module), **compile_kwargs)
    return module


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def _call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    # Copied per stage by `compile_stage`: dynamo starts tracing here and inlines the rest.
    return self._call_impl(*args, **kwargs)
