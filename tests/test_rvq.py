"""The ``rvq`` bottleneck against descript-audio-codec's and encodec's own quantiser code.

descript-audio-codec (DAC, the release pinned in the Makefile, installed with --no-deps) holds
the reference `ResidualVectorQuantize` in dac/nn/quantize.py; its package imports audiotools at
the top, so that file (and dac/nn/layers.py, which it imports) is loaded directly from the
installed distribution, unchanged. encodec's `EuclideanCodebook` is the reference for the EMA
update. Everything else is checked against formulas written here in float64.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import importlib.util
import sys

import pytest
import torch
from torch.nn import functional as F

import lyra
from lyra.core.errors import LyraError
from lyra.model.bottlenecks.rvq import RVQ
from lyra.model.config import ModelConfig

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

DAC_VERSION = "1.0.0"


def _load(dist: importlib.metadata.Distribution, path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, dist.locate_file(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dac_quantize():
    """DAC's dac/nn/quantize.py as released (its `from dac.nn.layers import ...` served by
    DAC's own layers.py, loaded the same way, for the duration of the load)."""
    try:
        dist = importlib.metadata.distribution("descript-audio-codec")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("descript-audio-codec is not installed; run `make setup`")
    assert dist.version == DAC_VERSION
    layers = _load(dist, "dac/nn/layers.py", "dac_reference_layers")
    saved = sys.modules.get("dac.nn.layers")
    sys.modules["dac.nn.layers"] = layers
    try:
        return _load(dist, "dac/nn/quantize.py", "dac_reference_quantize")
    finally:
        if saved is None:
            del sys.modules["dac.nn.layers"]
        else:
            sys.modules["dac.nn.layers"] = saved


@pytest.fixture(scope="module")
def encodec_vq():
    try:
        from encodec.quantization import core_vq
    except ImportError:
        pytest.fail("encodec is not installed; run `make setup`")
    return core_vq


def make(seed: int, dim: int = 24, **options) -> RVQ:
    torch.manual_seed(seed)
    options = dict(dict(num_quantizers=4, codebook_size=32, codebook_dim=6), **options)
    return RVQ(dim, **options)


def features(seed: int, batch: int = 3, dim: int = 24, frames: int = 40) -> torch.Tensor:
    return torch.randn(batch, dim, frames, generator=torch.Generator().manual_seed(seed))


def dac_twin(dac_quantize, ours: RVQ):
    """DAC's RVQ with our weights (its weight norm removed, so the names are ours)."""
    theirs = dac_quantize.ResidualVectorQuantize(
        input_dim=ours.latent_dim, n_codebooks=ours.num_quantizers, codebook_size=ours.codebook_size,
        codebook_dim=ours.codebook_dim, quantizer_dropout=1.0)
    for vq in theirs.quantizers:
        torch.nn.utils.remove_weight_norm(vq.in_proj)
        torch.nn.utils.remove_weight_norm(vq.out_proj)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs


# -- against DAC -----------------------------------------------------------------------------
def test_training_pass_equals_dac_with_quantizer_dropout(dac_quantize):
    ours = make(1)
    theirs = dac_twin(dac_quantize, ours).train()
    h = features(2).requires_grad_(True)
    h2 = h.detach().clone().requires_grad_(True)
    torch.manual_seed(3)
    z_ref, codes_ref, _, commit_ref, book_ref = theirs(h2)
    torch.manual_seed(3)                       # DAC's draw (quantizer_dropout=1: every example)
    n = torch.randint(1, ours.num_quantizers + 1, (h.shape[0],))
    assert n.min() < ours.num_quantizers       # the mask matters in this draw
    out = ours(h, n)
    assert torch.equal(out.codes, codes_ref)
    torch.testing.assert_close(out.z, z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["commitment"], commit_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.terms["codebook"], book_ref, rtol=1e-5, atol=1e-7)
    # The same gradients: straight-through to h, commitment to the projections, codebook loss
    # to the codebooks.
    g = torch.randn_like(z_ref)
    ((out.z * g).sum() + out.terms["commitment"] + 2 * out.terms["codebook"]).backward()
    ((z_ref * g).sum() + commit_ref + 2 * book_ref).backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-4, atol=1e-5)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs_params[name].grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("rows", [1, 3, 4])
def test_encode_and_decode_equal_dac_at_every_bitrate(dac_quantize, rows):
    ours = make(4)
    theirs = dac_twin(dac_quantize, ours).eval()
    h = features(5)
    with torch.no_grad():
        z_ref, codes_ref, *_ = theirs(h, n_quantizers=rows)
        codes = ours.encode(h, rows)
        assert codes.dtype == torch.int64 and codes.shape == (3, rows, 40)
        assert torch.equal(codes, codes_ref)
        z_from_codes, _, _ = theirs.from_codes(codes)
        torch.testing.assert_close(ours.decode(codes), z_from_codes, rtol=0, atol=0)
        torch.testing.assert_close(ours.decode(codes), z_ref, rtol=1e-5, atol=1e-5)


def test_state_dict_names_are_dacs_less_weight_norm():
    names = set(make(0).state_dict())
    want = {f"quantizers.{i}.{m}.{p}" for i in range(4) for m in ("in_proj", "out_proj") for p in ("weight", "bias")}
    want |= {f"quantizers.{i}.codebook.weight" for i in range(4)}
    assert names == want
    ema = make(0, codebook_update="ema", init="kmeans").state_dict()
    extra = set(ema) - want
    ema_state = {f"quantizers.{i}.{b}" for i in range(4) for b in ("cluster_size", "embed_avg")}
    assert extra == ema_state | {"kmeans_initialized"}
    assert all(ema[k].is_floating_point() for k in extra)
    assert ema["quantizers.0.codebook.weight"].shape == (32, 6)


# -- straight-through gradients, against the formula ------------------------------------------
def test_straight_through_gradient_is_the_projections_product():
    """One quantiser: z = out_proj(z_e + sg(z_q - z_e)), so dz/dh = W_out W_in exactly."""
    ours = make(6, num_quantizers=1)
    h = features(7).requires_grad_(True)
    out = ours(h)
    g = torch.randn_like(out.z)
    (grad,) = torch.autograd.grad((out.z * g).sum(), h, retain_graph=True)
    w_in = ours.quantizers[0].in_proj.weight.double()[:, :, 0]      # [d, D]
    w_out = ours.quantizers[0].out_proj.weight.double()[:, :, 0]    # [D, d]
    want = torch.einsum("dk,ed,bef->bkf", w_in, w_out, g.double())
    torch.testing.assert_close(grad.double(), want, rtol=1e-5, atol=1e-6)
    # The commitment term pulls z_e to its code: d/dh = W_in^T 2 (z_e - z_q) / (d F B).
    z_e = ours.quantizers[0].in_proj(h).double()
    z_q = ours.quantizers[0].codebook.weight.double()[out.codes[:, 0]].transpose(1, 2)
    (grad,) = torch.autograd.grad(out.terms["commitment"], h)
    want = torch.einsum("dk,bdf->bkf", w_in, 2 * (z_e - z_q) / z_e[0].numel() / h.shape[0])
    torch.testing.assert_close(grad.double(), want.detach(), rtol=1e-5, atol=1e-9)


# -- quantiser dropout -------------------------------------------------------------------------
def test_dropout_counts_follow_dacs_distribution():
    q, p, seeds = 4, 0.5, torch.arange(4000) * 7919 + 11
    n = make(0, quantizer_dropout=p).noise(seeds, 10)
    assert n.dtype == torch.int64 and n.shape == (4000,)
    for k in range(1, q + 1):
        want = p / q + (1 - p) * (k == q)           # dropped: U{1..Q}; kept: all Q
        got = float((n == k).double().mean())
        sigma = (want * (1 - want) / len(seeds)) ** 0.5
        assert abs(got - want) < 5 * sigma, (k, got, want)
    assert torch.equal(make(0, quantizer_dropout=0.0).noise(seeds, 10), torch.full((4000,), q))
    assert int(make(0, quantizer_dropout=1.0).noise(seeds, 10).max()) <= q


def test_dropout_is_per_example_whatever_the_batch():
    bottleneck = make(8, quantizer_dropout=0.7)
    seeds = torch.tensor([5, 91, 4, 1234, 77, 8])
    n = bottleneck.noise(seeds, 40)
    alone = torch.cat([bottleneck.noise(seeds[i:i + 1], 40) for i in range(len(seeds))])
    assert torch.equal(n, alone)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.equal(bottleneck.noise(seeds[perm], 40), n[perm])
    assert len(set(n.tolist())) > 1
    h = features(9, batch=6)
    with torch.no_grad():
        out, shuffled = bottleneck(h, n), bottleneck(h[perm], n[perm])
    torch.testing.assert_close(shuffled.z, out.z[perm], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(shuffled.terms["commitment"], out.terms["commitment"])
    assert torch.equal(shuffled.stats["counts"], out.stats["counts"])


def test_a_dropped_example_trains_the_bitrate_of_its_first_codes():
    bottleneck = make(10)
    h, n = features(11, batch=4), torch.tensor([1, 4, 2, 3])
    with torch.no_grad():
        out = bottleneck(h, n)
        for b, rows in enumerate(n.tolist()):
            torch.testing.assert_close(out.z[b:b + 1], bottleneck.decode(out.codes[b:b + 1, :rows]),
                                       rtol=1e-5, atol=1e-5)
    # Counts come from active quantisers only: quantiser q counts the frames of examples with n > q.
    counts = out.stats["counts"]
    assert counts.dtype == torch.float64
    assert counts.sum(1).tolist() == [40.0 * int((n > q).sum()) for q in range(4)]
    for q in range(4):
        want = torch.bincount(out.codes[n > q, q].reshape(-1), minlength=32).double()
        assert torch.equal(counts[q], want)


# -- decoding fewer quantisers ----------------------------------------------------------------
def test_decode_of_the_first_codes_is_the_sum_of_their_vectors():
    bottleneck = make(12)
    h = features(13)
    with torch.no_grad():
        codes = bottleneck.encode(h)
        for rows in range(1, 5):
            assert torch.equal(bottleneck.encode(h, rows), codes[:, :rows])
            want = 0
            for i in range(rows):
                vq = bottleneck.quantizers[i]
                rows_i = vq.codebook.weight.double()[codes[:, i]]                     # [B, F, d]
                want = want + torch.einsum("ed,bfd->bef", vq.out_proj.weight.double()[:, :, 0], rows_i) \
                    + vq.out_proj.bias.double()[None, :, None]
            torch.testing.assert_close(bottleneck.decode(codes[:, :rows]).double(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(LyraError, match=r"--quantizers: must be in 1\.\.4"):
        bottleneck.encode(h, 5)


# -- EMA codebooks, against encodec --------------------------------------------------------------
def test_ema_update_equals_encodecs_euclidean_codebook(encodec_vq):
    """With unit-norm rows the cosine lookup is encodec's Euclidean one, so encodec's codebook,
    given the same buffers and vectors, makes the same assignment and the same EMA step."""
    bottleneck = make(14, num_quantizers=1, codebook_update="ema", ema_decay=0.9)
    vq = bottleneck.quantizers[0]
    gen = torch.Generator().manual_seed(15)
    with torch.no_grad():
        vq.codebook.weight.copy_(F.normalize(vq.codebook.weight))
        vq.cluster_size.copy_(torch.rand(32, generator=gen) * 3)
        vq.embed_avg.copy_(torch.randn(32, 6, generator=gen))
    ref = encodec_vq.EuclideanCodebook(6, 32, kmeans_init=False, decay=0.9, epsilon=1e-5,
                                       threshold_ema_dead_code=0).train()
    for name in ("cluster_size", "embed_avg"):
        getattr(ref, name).copy_(getattr(vq, name))
    ref.embed.copy_(vq.codebook.weight)
    h = features(16)
    with torch.no_grad():
        out = bottleneck(h)
        z_e = vq.in_proj(h).transpose(1, 2)                               # [B, F, d], encodec's layout
        _, ref_codes = ref(z_e)
    assert torch.equal(out.codes[:, 0], ref_codes)
    assert set(out.terms) == {"commitment"} and RVQ.TERMS == ("commitment", "codebook")
    assert bottleneck.TERMS == ("commitment",)
    bottleneck.update(out.stats, step=1)
    torch.testing.assert_close(vq.cluster_size, ref.cluster_size, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(vq.embed_avg, ref.embed_avg, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vq.codebook.weight, ref.embed, rtol=1e-5, atol=1e-6)
    assert not vq.codebook.weight.requires_grad                   # the EMA trains it, not the optimiser


def test_summed_stats_of_two_halves_update_as_the_whole():
    """What accumulation and DDP do: stats of micro-batches (or processes) summed, one update."""
    base = make(17, codebook_update="ema", dead_code_threshold=1.5, quantizer_dropout=0.5)
    h, seeds = features(18, batch=6), torch.arange(6) + 100
    whole, halves = copy.deepcopy(base), copy.deepcopy(base)
    with torch.no_grad():
        one = whole(h, whole.noise(seeds, 40)).stats
        a = halves(h[:2], halves.noise(seeds[:2], 40)).stats
        b = halves(h[2:], halves.noise(seeds[2:], 40)).stats
    summed = {k: a[k] + b[k] for k in a}
    assert torch.equal(summed["counts"], one["counts"])
    torch.testing.assert_close(summed["sums"], one["sums"], rtol=1e-12, atol=1e-12)
    logged = whole.update(one, step=3)
    assert halves.update(summed, step=3) == logged
    assert logged["replaced_q0"] > 0
    for (name, x), (_, y) in zip(whole.state_dict().items(), halves.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=name)
    before = base.state_dict()
    assert not torch.equal(before["quantizers.0.codebook.weight"], whole.state_dict()["quantizers.0.codebook.weight"])


# -- dead codes -----------------------------------------------------------------------------------
def test_dead_codes_take_the_most_used_rows_split_deterministically():
    bottleneck = make(19, num_quantizers=1, codebook_size=16, dead_code_threshold=2.0)
    h = features(20, batch=2, frames=30)
    with torch.no_grad():
        out = bottleneck(h)
    counts = out.stats["counts"][0]
    dead = counts < 2
    assert 0 < int(dead.sum()) < 16
    before = bottleneck.quantizers[0].codebook.weight.detach().clone()
    twin = copy.deepcopy(bottleneck)
    other_step = copy.deepcopy(bottleneck)
    logged = bottleneck.update(out.stats, step=7)
    twin.update(out.stats, step=7)
    other_step.update(out.stats, step=8)
    after = bottleneck.quantizers[0].codebook.weight.detach()
    assert logged["replaced_q0"] == float(dead.sum())
    assert torch.equal(after[~dead], before[~dead])                  # used codes are untouched
    assert torch.equal(after, twin.quantizers[0].codebook.weight)    # the same on every process
    assert not torch.equal(after[dead], other_step.quantizers[0].codebook.weight[dead])
    # Each dead code is a most used code's row, perturbed by ~1% of its size.
    order = sorted(range(16), key=lambda k: (-float(counts[k]), k))[:int((~dead).sum())]
    for j, k in enumerate(dead.nonzero().flatten().tolist()):
        src = before[order[j % len(order)]]
        gap = float((after[k] - src).norm() / src.norm())
        assert 1e-4 < gap < 0.05, gap
    # The splits take part of their sources' clusters: on the same data the replaced codes are
    # used more, and usage is more even (higher perplexity).
    with torch.no_grad():
        again = bottleneck(h).stats["counts"][0]
    assert float(again[dead].sum()) > 2 * float(counts[dead].sum())
    assert bottleneck.update({"counts": again[None]}, 9)["perplexity_q0"] > logged["perplexity_q0"]


def test_no_dead_code_replacement_by_default():
    bottleneck = make(21, num_quantizers=1, codebook_size=16)
    with torch.no_grad():
        out = bottleneck(features(22, batch=1, frames=5))
    before = copy.deepcopy(bottleneck.state_dict())
    logged = bottleneck.update(out.stats, step=1)
    assert "replaced_q0" not in logged and logged["usage_q0"] <= 5 / 16
    for k, v in bottleneck.state_dict().items():
        assert torch.equal(v, before[k]), k


# -- k-means initialisation -----------------------------------------------------------------------
def test_kmeans_init_is_a_deterministic_fixed_point():
    base = make(23, num_quantizers=2, codebook_size=8, init="kmeans", kmeans_iters=60, codebook_update="ema")
    assert not base.initialized
    h = features(24, batch=4, frames=64)
    one, two, other = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    one.initialize(h)
    two.initialize(h)
    other.initialize(h, seed=1)
    assert one.initialized and float(one.state_dict()["kmeans_initialized"]) == 1.0
    for (name, x), (_, y) in zip(one.state_dict().items(), two.state_dict().items()):
        assert torch.equal(x, y), name
    assert not torch.equal(one.quantizers[0].codebook.weight, other.quantizers[0].codebook.weight)
    # Converged: every centre is the (float64) mean of the vectors whose nearest centre by cosine it is.
    vq = one.quantizers[0]
    with torch.no_grad():
        z_e = vq.in_proj(h).transpose(1, 2).reshape(-1, 6).double()
    book = vq.codebook.weight.double()
    nearest = (F.normalize(z_e) @ F.normalize(book).t()).argmax(1)
    for k in range(8):
        assert bool((nearest == k).any())
        torch.testing.assert_close(book[k], z_e[nearest == k].mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vq.embed_avg, vq.codebook.weight)
    assert torch.equal(vq.cluster_size, torch.ones(8))
    # And it quantises these features better than the random codebooks it replaced.
    with torch.no_grad():
        assert float(one(h).terms["commitment"]) < 0.5 * float(base(h).terms["commitment"])


def test_codebook_state_survives_a_checkpoint(tmp_path):
    """What a resumed run reads back: the k-means flag (so it is not redone) and the EMA state."""
    from lyra.model.checkpoint import load_model, save_checkpoint

    model = lyra.build_model(rvq_config(codebook_update="ema", init="kmeans"))
    model.bottleneck.initialize(features(33, batch=4, dim=16))
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.bottleneck.initialized and not lyra.build_model(rvq_config(init="kmeans")).bottleneck.initialized
    for (name, x), (_, y) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(x, y), name


# -- compiled == eager -----------------------------------------------------------------------------
def test_compiled_pass_encode_decode_equal_eager_with_no_graph_breaks():
    torch._dynamo.reset()
    bottleneck = make(25, quantizer_dropout=0.5, codebook_update="ema")
    h, noise = features(26), torch.tensor([2, 4, 1])
    explained = torch._dynamo.explain(bottleneck)(h, noise)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(bottleneck, fullgraph=True)
    hc = h.clone().requires_grad_(True)
    he = h.clone().requires_grad_(True)
    got, want = compiled(hc, noise), bottleneck(he, noise)
    assert torch.equal(got.codes, want.codes)
    torch.testing.assert_close(got.z, want.z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.terms["commitment"], want.terms["commitment"], rtol=1e-5, atol=1e-7)
    assert torch.equal(got.stats["counts"], want.stats["counts"])
    torch.testing.assert_close(got.stats["sums"], want.stats["sums"], rtol=1e-5, atol=1e-5)
    g = torch.randn_like(want.z)
    ((got.z * g).sum() + got.terms["commitment"]).backward()
    ((want.z * g).sum() + want.terms["commitment"]).backward()
    torch.testing.assert_close(hc.grad, he.grad, rtol=1e-4, atol=1e-5)
    encode = torch.compile(bottleneck.encode, fullgraph=True)
    decode = torch.compile(bottleneck.decode, fullgraph=True)
    with torch.no_grad():
        codes = encode(h, 3)
        assert torch.equal(codes, bottleneck.encode(h, 3))
        torch.testing.assert_close(decode(codes), bottleneck.decode(codes), rtol=1e-6, atol=1e-6)


def test_float32_inside_autocast():
    """Training runs under bf16 autocast; the quantiser must not (its convs would run in bf16)."""
    bottleneck = make(27)
    h = features(28)
    with torch.no_grad():
        want, codes_want = bottleneck(h), bottleneck.encode(h)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, codes = bottleneck(h), bottleneck.encode(h)
            z = bottleneck.decode(codes)
    assert got.z.dtype == torch.float32 and z.dtype == torch.float32
    assert torch.equal(got.codes, want.codes) and torch.equal(codes, codes_want)
    assert torch.equal(got.z, want.z)
    assert torch.equal(z, bottleneck.decode(codes_want))


def test_a_model_cast_to_bf16_quantises_in_float32_and_hands_z_over_in_bf16():
    """Inference casts the weights (`lyra.codec.inference.prepare_model`): the same codes and
    vectors as float32 weights of the same (bf16-rounded) values, z in the decoder's dtype."""
    cast = make(31).to(torch.bfloat16)
    same = copy.deepcopy(cast).float()
    h = features(32).bfloat16()
    with torch.no_grad():
        codes = cast.encode(h)
        assert torch.equal(codes, same.encode(h.float()))
        z = cast.decode(codes)
        assert z.dtype == torch.bfloat16
        assert torch.equal(z, same.decode(codes).bfloat16())
        assert cast(h).z.dtype == torch.bfloat16


# -- in a model, and its options ---------------------------------------------------------------------
def rvq_config(**options) -> ModelConfig:
    return dataclasses.replace(ModelConfig.small(), bottleneck="rvq",
                               options={"rvq": dict(dict(num_quantizers=3, codebook_size=64), **options)})


def test_a_small_model_with_rvq_encodes_and_decodes_codes():
    torch.manual_seed(29)
    model = lyra.build_model(rvq_config()).eval()
    assert model.discrete and model.bottleneck.residual
    x = torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(30)) * 0.1
    with torch.no_grad():
        codes = model.encode_latents(x)
        assert codes.dtype == torch.int64 and codes.shape == (2, 3, model.num_frames(5000))
        assert 0 <= int(codes.min()) and int(codes.max()) < 64
        assert torch.equal(model.encode_latents(x, 2), codes[:, :2])
        for rows in (1, 3):
            y = model.decode_latents(codes[:, :rows], 5000)
            assert y.shape == (2, 2, 5000)
            torch.testing.assert_close(y, model.decode(model.bottleneck.decode(codes[:, :rows]), 5000))
        y, out = model.reconstruct(x)
        assert torch.equal(out.codes, codes)
        torch.testing.assert_close(y, model.decode_latents(codes, 5000), rtol=1e-4, atol=1e-5)
        half = copy.deepcopy(model).to(torch.bfloat16)
        assert half.decode_latents(half.encode_latents(x.bfloat16()), 5000).dtype == torch.bfloat16


@pytest.mark.parametrize("key, value, message", [
    ("codebook_update", "sgd", "codebook_update: must be one of 'loss', 'ema', got 'sgd'"),
    ("quantizer_dropout", 1.5, r"quantizer_dropout: must be a number in \[0.0, 1.0\], got 1.5"),
    ("num_quantizers", 0, r"num_quantizers: must be an integer in 1\.\.64, got 0"),
    ("codebook_size", 1, r"codebook_size: must be an integer in 2\.\.65536, got 1"),
    ("init", "zeros", "init: must be one of 'random', 'kmeans', got 'zeros'"),
    ("ema_decay", 1.0, r"ema_decay: must be a number in \[0.0, 1.0\), got 1.0"),
    ("dead_code_threshold", -1, r"dead_code_threshold: must be a number"),
])
def test_bad_options_are_one_line_naming_the_key(key, value, message):
    with pytest.raises(LyraError, match=message) as raised:
        lyra.build_model(rvq_config(**{key: value}))
    assert "\n" not in str(raised.value) and "model.options.rvq" in str(raised.value)
