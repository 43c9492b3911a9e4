"""One residual unit, one encoder block and one decoder block, forward and forward+backward.

The blocks are those of the model's first stage (see `benchmarks.sizes`), built through the
registry as the model builds them. Throughput is seconds of audio per second: the block
processes the stage of `batch` clips of `samples` samples. Forward runs without autograd
(inference); forward+backward takes the gradients of the input and every parameter with
`torch.autograd.grad` (nothing accumulates between rounds).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import harness
from benchmarks.sizes import Sizes
from benchmarks.variants import EAGER, MODEL_VARIANTS, REFERENCE_ACTIVATION, Variant, fresh_compile_state, require
from lyra import registry
from lyra.model.compilation import compile_stage

PASSES = ("forward", "forward+backward")


def _build(kind: str, sizes: Sizes, variant: Variant, device: torch.device):
    """(block, its input) for `kind` at the first stage, with `variant`'s Snake (uncompiled)."""
    cfg = sizes.model
    activation = cfg.activation if variant.shipped else REFERENCE_ACTIVATION
    c_in, c_out, stride = sizes.first_stage
    torch.manual_seed(0)
    if kind == "residual_unit":
        block = registry.create("residual_unit", cfg.residual_unit, channels=c_in,
                                dilation=cfg.dilations[0], kernel_size=cfg.residual_kernel_size,
                                activation=activation, **cfg.block_options)
        shape = (sizes.batch, c_in, sizes.samples)                # [B, C, T] -> [B, C, T]
    else:
        name = cfg.encoder_block if kind == "encoder_block" else cfg.decoder_block
        encoder = kind == "encoder_block"
        block = registry.create(
            kind, name, in_channels=c_in if encoder else c_out, out_channels=c_out if encoder else c_in,
            stride=stride, dilations=cfg.dilations, kernel_size=cfg.residual_kernel_size,
            activation=activation, residual_unit=cfg.residual_unit, **cfg.block_options,
        )
        # encoder: [B, Cin, T] -> [B, Cout, T/s]; decoder: [B, Cout, T/s] -> [B, Cin, T]
        shape = (sizes.batch, c_in, sizes.samples) if encoder else (sizes.batch, c_out, sizes.samples // stride)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    return block.to(device), x


def _compile(block: torch.nn.Module, kind: str, variant: Variant) -> None:
    """As the variant's model would: a shipped stage (`compile_stage`), or `torch.compile`."""
    if not variant.compiled:
        return
    fresh_compile_state()
    if variant.shipped:
        compile_stage(block, kind, fullgraph=True)
    else:
        block.compile()


@pytest.mark.parametrize("variant", MODEL_VARIANTS, ids=lambda v: v.name)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("kind", ("residual_unit", "encoder_block", "decoder_block"))
def test_block(benchmark, kind, pass_, variant, bench_sizes, device, bench_session):
    require(variant, device)
    block, x = _build(kind, bench_sizes, variant, device)
    reference, _ = _build(kind, bench_sizes, EAGER, device)
    reference.load_state_dict(block.state_dict())
    _compile(block, kind, variant)

    if pass_ == "forward":
        def call():
            with torch.no_grad():
                return block(x)

        with torch.no_grad():
            harness.check_matches(call(), reference(x), harness.matmul_tolerance(device), f"{kind} ({variant.name})")
    else:
        x.requires_grad_(True)
        inputs = (x, *block.parameters())
        grad_y = torch.randn_like(block(x))

        def call():
            return torch.autograd.grad(block(x), inputs, grad_y)

        want = torch.autograd.grad(reference(x), (x, *reference.parameters()), grad_y)
        harness.check_matches(call()[0], want[0], harness.matmul_tolerance(device),
                              f"{kind} grad_x ({variant.name})")
        del want
    del reference

    harness.run(
        benchmark, call, group=f"{kind} {pass_}", variant=variant,
        work=harness.Work(bench_sizes.audio_seconds, "audio s/s"), session=bench_session,
        rounds=bench_sizes.fast_rounds,
    )
