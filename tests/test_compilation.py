"""`build_model(compile=True)`: compiled once per shape class, never a graph break, never a
silent fallback to eager, and the same results as eager.

Dynamo runs a function eagerly once its cache of compiled graphs (per code object) is full,
with only a warning; these tests turn that into an error (``fail_on_recompile_limit_hit``),
count graph breaks, and check that a second round of the same work compiles nothing new.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.utils import counters

import lyra
from lyra.model.compilation import is_compiled, stages
from lyra.model.config import ModelConfig
from lyra.train.losses.kl import kl_divergence
from lyra.codec.streaming import decode_stream, encode_stream
from lyra.train.activation_checkpointing import checkpoint_residual_units

# Hop 32, five blocks each way as in the real model (twelve stages), but narrow.
TINY = ModelConfig(base_channels=4, latent_dim=4, c_mults=(1, 1, 2, 2, 2), strides=(2, 2, 2, 2, 2), dilations=(1, 3))
# Dynamo's caching, recompiles and graph breaks do not depend on the backend; aot_eager traces
# forward and backward like inductor, without generating C++ (seconds instead of minutes on
# 2 cores). Inductor itself runs in the `slow` variant, in tests/test_snake.py (fusion), in
# tests/test_engine.py (compiled training) and in tests/test_codec_cli.py (`--compile`).
BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture
def strict_dynamo():
    """A fresh dynamo whose recompile-limit fallback raises; yields its counters."""
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield counters
    torch._dynamo.reset()


def pair(seed: int = 0, **compile_options) -> tuple[lyra.VAE, lyra.VAE]:
    """(eager model, compiled model) with the same weights."""
    torch.manual_seed(seed)
    eager = lyra.build_model(TINY)
    compiled = lyra.build_model(TINY, compile=True, **compile_options)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def stage_code(stage: torch.nn.Module):
    """The code object dynamo caches the stage's graphs on."""
    return stage._compiled_call_impl._torchdynamo_orig_callable.__func__.__code__


def graphs_per_stage(model: lyra.VAE) -> dict[str, int]:
    return {name: len(_debug_get_cache_entry_list(stage_code(s))) for name, s in stages(model).items()}


def train_step(model: lyra.VAE, audio: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
    """Loss and backward as the engine does it; returns the gradients."""
    model.train()
    model.zero_grad(set_to_none=True)
    mean, logvar = model.encode(audio)
    recon = model.decode(mean + torch.exp(0.5 * logvar) * noise, audio.shape[-1])
    loss = (recon - audio).abs().mean() + 1e-2 * kl_divergence(mean, logvar)
    loss.backward()
    return [p.grad for p in model.parameters()]


def validate(model: lyra.VAE, audio: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.decode(model.encode(audio)[0], audio.shape[-1])


def codec(model: lyra.VAE, lengths: list[int], gen: torch.Generator) -> list[torch.Tensor]:
    """What `lyra encode/decode` does: whole files of several lengths, then streamed in chunks
    of random sizes; returns every output."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for n in lengths:
            x = torch.randn(1, 2, n, generator=gen)
            mean = model.encode(x)[0]
            outputs += [mean, model.decode(mean, n)]
        x = torch.randn(2, 40 * model.hop_length + 7, generator=gen)
        sizes: list[int] = []
        while sum(sizes) < x.shape[-1]:
            sizes.append(min(int(torch.randint(1, 200, (1,), generator=gen)), x.shape[-1] - sum(sizes)))
        z = torch.cat(list(encode_stream(model, x.split(sizes, dim=-1), 5)), dim=-1)
        y = torch.cat(list(decode_stream(model, z.split(3, dim=-1), 7, length=x.shape[-1])), dim=-1)
        outputs += [z, y]
    return outputs


def test_every_stage_is_compiled_through_a_code_object_of_its_own():
    model = lyra.build_model(TINY, compile=True)
    units = stages(model)
    assert len(units) == 2 * len(TINY.strides) + 2 and all(is_compiled(s) for s in units.values())
    assert len({stage_code(s) for s in units.values()}) == len(units)
    assert {stage_code(s).co_name for s in units.values()} == {f"stage[{name}]" for name in units}


def cycle(eager: lyra.VAE, compiled: lyra.VAE, rounds: int = 2) -> list[dict[str, int]]:
    """Rounds of: a training step, a validation pass with another batch size, and the codec on
    files of four lengths and streamed chunks of random sizes. Checks eager's results
    throughout; returns the graphs per stage after each round."""
    gen = torch.Generator().manual_seed(0)
    hop = TINY.hop_length
    audio = torch.randn(2, 2, 8 * hop, generator=gen)
    noise = torch.randn(2, TINY.latent_dim, 8, generator=gen)
    val = torch.randn(3, 2, 8 * hop, generator=gen)
    lengths = [37, 5 * hop, 333, 61 * hop + 1]
    graphs = []
    for _ in range(rounds):
        for got, want in zip(train_step(compiled, audio, noise), train_step(eager, audio, noise)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(validate(compiled, val), validate(eager, val), rtol=1e-4, atol=1e-6)
        seed = int(torch.randint(0, 2**31, (1,), generator=gen))
        ours = codec(compiled, lengths, torch.Generator().manual_seed(seed))
        theirs = codec(eager, lengths, torch.Generator().manual_seed(seed))
        for got, want in zip(ours, theirs):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        graphs.append(graphs_per_stage(compiled))
    return graphs


@pytest.mark.parametrize("backend", BACKENDS)
def test_compilation_holds_through_training_validation_and_the_codec(strict_dynamo, backend):
    """No graph break, no stage past dynamo's limit, nothing compiled anew in a second round of
    the same work, and eager's results throughout (`cycle`)."""
    graphs = cycle(*pair(backend=backend))
    assert not strict_dynamo["graph_break"], dict(strict_dynamo["graph_break"])
    first, second = graphs
    assert second == first, "the second round compiled new graphs"
    limit = torch._dynamo.config.recompile_limit
    assert all(1 <= n < limit for n in first.values()), first


@pytest.mark.slow   # a demonstration (35 s): the test above is what guards the product
def test_the_same_work_through_nn_module_compile_runs_out_of_graphs(strict_dynamo):
    """Why stages have code objects of their own (and that `cycle` is demanding enough to tell):
    compiled with `nn.Module.compile`, whose caches all blocks share, the same work passes
    dynamo's recompile limit, where Lyra's stages would silently have run eager."""
    torch.manual_seed(0)
    eager = lyra.build_model(TINY)
    compiled = lyra.build_model(TINY)
    compiled.load_state_dict(eager.state_dict())
    for stage in stages(compiled).values():
        stage.compile(fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="fail_on_recompile_limit_hit"):
        cycle(eager, compiled, rounds=1)


def test_compiled_training_with_activation_checkpointing(strict_dynamo):
    """`runtime.compile` with `runtime.activation_checkpointing`: the checkpointed residual units
    trace inside the compiled stages (no graph break) and give eager's gradients."""
    eager, compiled = pair(seed=1, backend="aot_eager")
    assert checkpoint_residual_units(compiled) == 2 * len(TINY.strides) * len(TINY.dilations)
    gen = torch.Generator().manual_seed(1)
    audio, noise = torch.randn(2, 2, 8 * TINY.hop_length, generator=gen), torch.randn(2, TINY.latent_dim, 8, generator=gen)
    for got, want in zip(train_step(compiled, audio, noise), train_step(eager, audio, noise)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not strict_dynamo["graph_break"], dict(strict_dynamo["graph_break"])


def test_a_deep_copy_of_a_compiled_model_is_an_eager_model_of_its_own():
    """EMA weights and the like are deep copies: they must not run the original's graphs."""
    import copy

    _, compiled = pair(backend="aot_eager")
    clone = copy.deepcopy(compiled)
    assert not any(is_compiled(s) for s in stages(clone).values())
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
        x = torch.randn(1, 2, 64)
        assert clone.encode(x)[0].abs().max() == 0 and compiled.encode(x)[0].abs().max() > 0
