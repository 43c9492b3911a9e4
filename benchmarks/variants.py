"""The implementations a benchmark compares, and how to build each.

Two independent switches give the variants:

    variant          Snake implementation                       blocks compiled
    eager            `lyra.snake.snake_reference` (plain torch)  no   <- the baseline
    compile          `lyra.snake.snake_reference`                yes (inductor fuses Snake itself)
    triton           `lyra.snake.snake` (fused Triton op)         no
    compile_triton   `lyra.snake.snake`                          yes (the default on a GPU)

The fused variants need CUDA: on a CPU `lyra.snake.snake` runs a PyTorch fallback, not the
Triton kernel, so they are skipped there, saying so. Model-level variants select the Snake
implementation through the registry, the way a config does: the eager formula is the
activation ``snake_reference`` (registered by this suite, see `ReferenceSnake`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass

import pytest
import torch
import torch._dynamo

from lyra.blocks import Snake
from lyra.config import ModelConfig
from lyra.model import VAE, build_model
from lyra.snake import snake_reference

REFERENCE_ACTIVATION = "snake_reference"
FUSED_ACTIVATION = "snake"


@dataclass(frozen=True)
class Variant:
    name: str
    fused: bool     # Snake through the fused Triton op (else the plain PyTorch formula)
    compiled: bool  # torch.compile on the blocks (or on the op, for the Snake op alone)

    @property
    def activation(self) -> str:
        return FUSED_ACTIVATION if self.fused else REFERENCE_ACTIVATION

    def skip_reason(self, device: torch.device) -> str | None:
        """Why this variant cannot run on `device` (None when it can)."""
        if self.fused and device.type != "cuda":
            return (f"{self.name}: the fused Triton Snake kernel runs on CUDA only "
                    f"(on {device.type} lyra.snake.snake falls back to PyTorch)")
        if self.fused and importlib.util.find_spec("triton") is None:
            return f"{self.name}: triton is not installed"
        return None


EAGER = Variant("eager", fused=False, compiled=False)
COMPILE = Variant("compile", fused=False, compiled=True)
TRITON = Variant("triton", fused=True, compiled=False)
COMPILE_TRITON = Variant("compile_triton", fused=True, compiled=True)

OP_VARIANTS = (EAGER, COMPILE, TRITON)                     # the Snake op on its own
MODULE_VARIANTS = (EAGER, COMPILE, TRITON, COMPILE_TRITON)  # blocks and the whole model
BY_NAME = {v.name: v for v in MODULE_VARIANTS}


class ReferenceSnake(Snake):
    """Snake through the plain PyTorch formula: the eager baseline's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake_reference(x, self.log_alpha, self.log_beta)  # [B, C, T] -> [B, C, T]


def require(variant: Variant, device: torch.device) -> None:
    """Skip the calling benchmark, with the reason, when `variant` cannot run on `device`."""
    reason = variant.skip_reason(device)
    if reason:
        pytest.skip(reason)


def fresh_compile_state() -> None:
    """Forget earlier compiled graphs, so one benchmark's graphs never count against another's.

    Dynamo keeps at most `recompile_limit` graphs per code object (all blocks of one class
    share theirs) and silently runs eager past it; the benchmarks turn that into an error
    (see `conftest.py`) and start each compiled variant from an empty cache.
    """
    torch._dynamo.reset()


def build_vae(config: ModelConfig, variant: Variant, device: torch.device, seed: int = 0) -> VAE:
    """The model with `variant`'s Snake, compiled if the variant says so; same weights per seed."""
    if variant.compiled:
        fresh_compile_state()
    torch.manual_seed(seed)
    cfg = dataclasses.replace(config, activation=variant.activation)
    model = build_model(cfg).to(device)
    if variant.compiled:
        model.compile_blocks()
    return model


def compile_module(module: torch.nn.Module, variant: Variant) -> torch.nn.Module:
    """Compile a single block in place when the variant asks for it."""
    if variant.compiled:
        fresh_compile_state()
        module.compile()
    return module
