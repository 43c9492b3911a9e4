"""The ``fsq`` bottleneck against its formula (Mentzer et al., 2023), written here in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lyra
from lyra.core.errors import LyraError
from lyra.model.bottlenecks.fsq import FSQ

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def reference(x: np.ndarray, levels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projected input x [B, G, d, F] (float64) -> (bounded y, codes [B, G, F], vectors q / floor(L/2))."""
    L = np.asarray(levels, dtype=np.float64)[:, None]                  # [d, 1]
    half = (L - 1) * (1 + 1e-3) / 2
    offset = np.where(L % 2 == 0, 0.5, 0.0)
    y = np.tanh(x + np.arctanh(offset / half)) * half - offset
    q = np.round(y)                                                    # half to even, as torch.round
    assert (q >= -np.floor(L / 2)).all() and (q <= np.ceil(L / 2) - 1).all()
    basis = np.cumprod([1, *levels[:-1]]).astype(np.float64)[:, None]
    codes = ((q + np.floor(L / 2)) * basis).sum(axis=2)
    return y, codes.astype(np.int64), q / np.floor(L / 2)


def grouped(t: torch.Tensor, groups: int) -> np.ndarray:
    b, c, f = t.shape
    return t.detach().double().numpy().reshape(b, groups, c // groups, f)


@pytest.mark.parametrize("levels, groups, dim", [((8, 5, 5, 5), 1, 4), ((3, 4, 2), 2, 6), ((8, 5, 5, 5), 1, 16),
                                                 ((7, 6), 3, 10)])
def test_pass_equals_the_formula(levels, groups, dim):
    torch.manual_seed(1)
    fsq = FSQ(dim, levels=levels, groups=groups)
    width = groups * len(levels)
    h = torch.randn(3, dim, 50, generator=torch.Generator().manual_seed(2)) * 2
    out = fsq(h)
    if width == dim:
        x = grouped(h, groups)
    else:   # the 1x1 projections, in float64
        w, b = fsq.project_in.weight.double()[:, :, 0], fsq.project_in.bias.double()
        x = grouped(torch.einsum("oc,bcf->bof", w, h.double()) + b[None, :, None], groups)
    _, codes, vectors = reference(x, levels)
    assert out.codes.dtype == torch.int64 and out.codes.shape == (3, groups, 50)
    np.testing.assert_array_equal(out.codes.numpy(), codes)
    v = torch.from_numpy(vectors.reshape(3, width, 50))
    if width != dim:
        v = torch.einsum("oc,bcf->bof", fsq.project_out.weight.double()[:, :, 0], v) \
            + fsq.project_out.bias.double()[None, :, None]
    torch.testing.assert_close(out.z.double(), v, rtol=1e-5, atol=1e-5)
    assert out.terms == {} and fsq.codebook_size == math.prod(levels)
    counts = torch.from_numpy(np.stack([np.bincount(codes[:, g].ravel(), minlength=fsq.codebook_size)
                                        for g in range(groups)])).double()
    assert torch.equal(out.stats["counts"], counts)


def test_codes_round_trip():
    torch.manual_seed(3)
    fsq = FSQ(16, levels=(8, 5, 5, 5), groups=2)
    h = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(4)) * 3
    with torch.no_grad():
        out, codes = fsq(h), fsq.encode(h)
        assert torch.equal(codes, out.codes)
        torch.testing.assert_close(fsq.decode(codes), out.z, rtol=1e-6, atol=1e-6)
        assert torch.equal(fsq.encode(h, 2), codes)
    with pytest.raises(LyraError, match="not residual"):
        fsq.encode(h, 1)


@pytest.mark.parametrize("levels", [(3, 4, 2), (8, 5, 5, 5), (2, 2)])
def test_every_code_is_reachable(levels):
    """The input whose bound is each level exactly encodes to each code, and decodes to q / floor(L/2)."""
    fsq = FSQ(len(levels), levels=levels)
    k = math.prod(levels)
    L = np.asarray(levels)[:, None]
    digits = (np.arange(k)[None, :] // np.cumprod([1, *levels[:-1]])[:, None]) % L   # [d, K]
    q = digits - L // 2
    half = (L - 1) * (1 + 1e-3) / 2
    offset = np.where(L % 2 == 0, 0.5, 0.0)
    x = np.arctanh((q + offset) / half) - np.arctanh(offset / half)                   # bound(x) = q
    h = torch.from_numpy(x[None]).float()                                             # [1, d, K]
    with torch.no_grad():
        codes = fsq.encode(h)
        assert torch.equal(codes, torch.arange(k)[None, None])
        torch.testing.assert_close(fsq.decode(codes).double(), torch.from_numpy(q / (L // 2))[None])


def test_straight_through_gradient_is_the_bounds_derivative():
    levels = (8, 5, 4)
    fsq = FSQ(3, levels=levels)
    h = (torch.randn(2, 3, 30, generator=torch.Generator().manual_seed(5)) * 1.5).requires_grad_(True)
    g = torch.randn(2, 3, 30, generator=torch.Generator().manual_seed(6))
    (grad,) = torch.autograd.grad((fsq(h).z * g).sum(), h)
    L = torch.tensor(levels, dtype=torch.float64)[:, None]
    half = (L - 1) * (1 + 1e-3) / 2
    offset = torch.where(L % 2 == 0, 0.5, 0.0).double()
    t = torch.tanh(h.detach().double() + torch.atanh(offset / half))
    want = g.double() * half * (1 - t ** 2) / torch.floor(L / 2)     # d(q/floor(L/2))/dx with round's gradient passed
    torch.testing.assert_close(grad.double(), want, rtol=1e-5, atol=1e-6)
    assert float(grad.abs().min()) > 0


def test_a_small_model_with_fsq_stores_codes():
    torch.manual_seed(7)
    model = lyra.build_model(lyra.ModelConfig.small(bottleneck="fsq", options={"fsq": {"levels": [5, 4], "groups": 2}}))
    x = torch.randn(1, 2, 3000, generator=torch.Generator().manual_seed(8)) * 0.1
    with torch.no_grad():
        codes = model.encode_latents(x)
        assert codes.dtype == torch.int64 and codes.shape == (1, 2, model.num_frames(3000))
        assert model.decode_latents(codes, 3000).shape == (1, 2, 3000)


def test_a_module_cast_to_bf16_gives_the_codes_of_its_values():
    """Inference casts a model's weights (`lyra.codec.inference.prepare_model`); the codes must
    stay those of the input's values, and z must come back in the decoder's dtype."""
    levels = (7, 7, 7, 7)                              # 343 = 7^3 is not a bf16 number
    h = (torch.randn(2, 4, 500, generator=torch.Generator().manual_seed(9)) * 3).bfloat16()
    cast = FSQ(4, levels=levels).to(torch.bfloat16)
    with torch.no_grad():
        codes = cast.encode(h)
        assert torch.equal(codes, FSQ(4, levels=levels).encode(h.float()))
        assert cast.decode(codes).dtype == torch.bfloat16


@pytest.mark.parametrize("options, message", [
    ({"levels": [1, 5]}, r"levels: must be a list of integers in 2\.\.4096, got \(1, 5\)"),
    ({"levels": "8,5"}, "levels: must be a list of integers"),
    ({"levels": []}, "levels: must be a list of integers"),
    ({"groups": 0}, r"groups: must be an integer in 1\.\.1024, got 0"),
    ({"levels": [4096, 4096, 4096]}, "levels: make 68,719,476,736 codes; at most 16,777,216"),
])
def test_bad_options_are_one_line_errors_through_build_model(options, message):
    config = lyra.ModelConfig.small(bottleneck="fsq", options={"fsq": options})
    with pytest.raises(LyraError, match=message) as raised:
        lyra.build_model(config)
    text = str(raised.value)
    assert "\n" not in text and text.startswith("model.options.fsq")
