"""The ``rvq`` bottleneck's training pass (forward + backward), eager and compiled.

descript-audio-codec's configuration (9 quantisers of 1,024 codes, 8-dimensional lookup) on
the encoder head's output of a batch of 8 crops of 200 latent frames, at two widths: D = 64
(the default model's latent) and D = 1024 (DAC's 44.1 kHz model). One call is the pass of
`lyra.train` with quantiser dropout drawn per example, then `torch.autograd.grad` of
``sum(z * g) + commitment + codebook`` with respect to the input and every parameter (nothing
accumulates between rounds). The compiled variant is the bottleneck compiled as Lyra compiles
a stage (`lyra.model.compilation.compile_stage`, ``fullgraph=True``); its gradients are checked
against the eager ones before it is timed. Throughput is seconds of audio per second at the
default model's hop (2,048 samples at 44.1 kHz).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import harness
from benchmarks.variants import COMPILE, EAGER, fresh_compile_state
from lyra.model.bottlenecks.rvq import RVQ
from lyra.model.compilation import compile_stage
from lyra.model.config import ModelConfig

BATCH, FRAMES = 8, 200
OPTIONS = dict(num_quantizers=9, codebook_size=1024, codebook_dim=8, quantizer_dropout=0.5)


def _build(dim: int, device: torch.device) -> tuple[RVQ, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bottleneck, h [B, D, F] requiring grad, dropout counts [B], upstream gradient [B, D, F])."""
    torch.manual_seed(0)
    bottleneck = RVQ(dim, **OPTIONS).to(device)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(BATCH, dim, FRAMES, generator=gen).to(device).requires_grad_(True)
    noise = bottleneck.noise(torch.arange(BATCH) + 1000, FRAMES)
    g = torch.randn(BATCH, dim, FRAMES, generator=gen).to(device)
    return bottleneck, h, noise, g


@pytest.mark.parametrize("variant", (EAGER, COMPILE), ids=lambda v: v.name)
@pytest.mark.parametrize("dim", (64, 1024))
def test_rvq_training_pass(benchmark, dim, variant, device, bench_sizes, bench_session):
    bottleneck, h, noise, g = _build(dim, device)
    inputs = (h, *bottleneck.parameters())

    def grads(module):
        out = module(h, noise)
        loss = (out.z * g).sum() + out.terms["commitment"] + out.terms["codebook"]
        return torch.autograd.grad(loss, inputs)

    want = grads(bottleneck)
    if variant.compiled:
        fresh_compile_state()
        compile_stage(bottleneck, "bottleneck", fullgraph=True)
    call = lambda: grads(bottleneck)   # noqa: E731
    got = call()
    tol = harness.matmul_tolerance(device)
    harness.check_matches(got[0], want[0], tol, f"rvq D={dim} grad_h ({variant.name})")
    harness.check_matches(got[-1], want[-1], tol, f"rvq D={dim} last codebook's grad ({variant.name})")
    del want, got

    hop = ModelConfig().hop_length
    seconds = BATCH * FRAMES * hop / ModelConfig().sample_rate
    harness.run(
        benchmark, call, group=f"rvq D={dim} forward+backward", variant=variant,
        work=harness.Work(seconds, "audio s/s"), session=bench_session, rounds=bench_sizes.fast_rounds,
        info={"batch": BATCH, "frames": FRAMES, "latent_dim": dim, **OPTIONS},
    )
