"""Both Snake implementations against the float64 reference. CPU only, small tensors.

- The Triton kernels (the CUDA path) run under Triton's interpreter, which needs
  TRITON_INTERPRET=1 in the environment before `triton` is imported (Triton decorates its own
  library, tl.sum included, at import). So the kernel tests live in `TestTritonKernels`, which
  runs in-process only when the process started with TRITON_INTERPRET=1; otherwise
  `test_triton_kernels_under_interpreter` runs that class in a fresh pytest process with the
  variable set. The `launches` fixture records every kernel launch, so a kernel test cannot
  pass on the PyTorch path by mistake.
- `SnakeFunction` (every other device) is tested in this process, eager and compiled: values
  and all three gradients, what autograd saves, and that inductor fuses it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lyra.model.snake import snake, snake_reference, snake_reference_backward

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"  # as this process started

# Odd lengths: T = 1, T < one block, a tail after one full block (1024), three blocks with a tail.
SHAPES = [(1, 1, 1), (2, 3, 7), (2, 3, 1037), (1, 2, 2100)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Error bounds, from the float64 reference on the same (already rounded) inputs:
# - y, grad_x: one unit in the last place of the output dtype (the interpreter truncates to
#   bf16 where the GPU rounds to nearest), plus float32 evaluation, 16 u32 times the size of
#   the terms (alpha * x is rounded to float32 before the sine, hence the alpha|x| factors);
# - grad_log_alpha, grad_log_beta: float32 sums of the same products whatever x's dtype,
#   1e-5 times the sum of |term| (1 + alpha|x|); a bf16 accumulator fails it.
U32 = 2.0**-24
ULP = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float64: 0.0}
PARAM_RTOL = 1e-5


@pytest.fixture
def launches(monkeypatch):
    """The arguments of every Triton kernel launch during the test, by kernel."""
    calls: dict[str, list[tuple]] = {"forward": [], "backward": []}
    if not HAS_TRITON:
        return calls
    import lyra_kernels.snake as kernels

    names = {kernels._snake_fwd_kernel: "forward", kernels._snake_bwd_kernel: "backward"}
    wrap = kernels.wrap_triton

    def spy(kernel):
        wrapped = wrap(kernel)

        class Launcher:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    calls[names[kernel]].append(args)
                    return wrapped[grid](*args, **kwargs)
                return launch

        return Launcher()

    monkeypatch.setattr(kernels, "wrap_triton", spy)
    return calls


@pytest.fixture
def cpu_path(launches, monkeypatch):
    """TRITON_INTERPRET unset: CPU tensors take the PyTorch path. Checks no kernel ran."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    yield
    assert launches == {"forward": [], "backward": []}


def make_inputs(shape, dtype, seed=0):
    """x, grad_y [B, C, T] in dtype; log_alpha, log_beta [C] float32, away from 0 so alpha != beta != 1."""
    gen = torch.Generator().manual_seed(seed)
    B, C, T = shape
    x = (2 * torch.randn(shape, generator=gen)).to(dtype)
    g = torch.randn(shape, generator=gen).to(dtype)
    log_alpha = 0.5 * torch.randn(C, generator=gen)
    log_beta = 0.5 * torch.randn(C, generator=gen)
    return x, g, log_alpha, log_beta


def run_op(x, g, log_alpha, log_beta):
    """(y, grad_x, grad_log_alpha, grad_log_beta) through `snake` and autograd."""
    x, log_alpha, log_beta = (t.detach().requires_grad_() for t in (x, log_alpha, log_beta))
    y = snake(x, log_alpha, log_beta)
    return (y, *torch.autograd.grad(y, (x, log_alpha, log_beta), g))


def assert_matches_reference(got, x, g, log_alpha, log_beta, contiguous=False):
    """Compare the outputs with the float64 reference on the same (already rounded) inputs.

    `contiguous`: the outputs must be contiguous (the Triton kernels' promise)."""
    x64, g64, la64, lb64 = (t.detach().double() for t in (x, g, log_alpha, log_beta))
    ref = (snake_reference(x64, la64, lb64), *snake_reference_backward(g64, x64, la64, lb64))
    y, grad_x, grad_la, grad_lb = got

    alpha, beta = la64.exp().view(1, -1, 1), lb64.exp().view(1, -1, 1)  # [C] -> [1, C, 1]
    inv = 1 / (beta + 1e-9)
    s, sin2, ax = torch.sin(alpha * x64), torch.sin(2 * alpha * x64), alpha * x64.abs()
    size_y = x64.abs() + inv * (1 + ax)                                  # [B, C, T]
    size_grad_x = g64.abs() * (1 + inv * alpha * (1 + 2 * ax))
    for name, out, expected, size in (("y", y, ref[0], size_y), ("grad_x", grad_x, ref[1], size_grad_x)):
        assert out.dtype == x.dtype and out.shape == x.shape and (out.is_contiguous() or not contiguous), name
        err = (out.double() - expected).abs()
        bound = ULP[x.dtype] * expected.abs() + 16 * U32 * size + 1e-7  # 1e-7: fp16 subnormals
        assert (err <= bound).all(), f"{name}: error {err.max():.3g}, worst error/bound {(err / bound).max():.3g}"

    l1_la = (alpha * inv * (g64 * x64 * sin2).abs() * (1 + ax)).sum(dim=(0, 2))  # [B, C, T] -> [C]
    l1_lb = (beta * inv**2 * (g64 * s**2).abs() * (1 + ax)).sum(dim=(0, 2))
    for name, out, expected, l1 in (("grad_log_alpha", grad_la, ref[2], l1_la),
                                    ("grad_log_beta", grad_lb, ref[3], l1_lb)):
        assert out.dtype == log_alpha.dtype and out.shape == log_alpha.shape, name
        err = (out.double() - expected).abs()
        assert (err <= PARAM_RTOL * l1 + 1e-7).all(), f"{name}: error {err.max():.3g}, scale {l1.max():.3g}"


def opcheck_triton_ops(dtype, test_utils):
    x, g, log_alpha, log_beta = make_inputs((2, 3, 7), dtype)
    x, log_alpha, log_beta = (t.requires_grad_() for t in (x, log_alpha, log_beta))
    torch.library.opcheck(torch.ops.lyra.snake, (x, log_alpha, log_beta, 1e-9), test_utils=test_utils)
    torch.library.opcheck(torch.ops.lyra.snake_backward, (g, x.detach(), log_alpha.detach(), log_beta.detach(), 1e-9),
                          test_utils=test_utils)


# --- The Triton kernels, under the interpreter ---------------------------------------------


@pytest.mark.skipif(not (HAS_TRITON and INTERPRETING),
                    reason="needs TRITON_INTERPRET=1 from process start; run by test_triton_kernels_under_interpreter")
class TestTritonKernels:
    @pytest.fixture(autouse=True)
    def _interpret(self, monkeypatch):
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # a test below may unset it

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    def test_matches_float64_reference(self, launches, shape, dtype):
        x, g, log_alpha, log_beta = make_inputs(shape, dtype)
        got = run_op(x, g, log_alpha, log_beta)
        assert len(launches["forward"]) == 1 and len(launches["backward"]) == 1
        assert_matches_reference(got, x, g, log_alpha, log_beta, contiguous=True)

    @pytest.mark.parametrize("layout", ["transposed", "sliced"])
    def test_strided_views_without_copying(self, launches, layout):
        B, C, T = 2, 3, 1037
        x, _, log_alpha, log_beta = make_inputs((B, C, T), torch.float32)
        if layout == "transposed":
            x = x.transpose(1, 2).contiguous().transpose(1, 2)  # [B, C, T] with strides (T*C, 1, C)
        else:
            x = torch.cat([x, x], dim=1)[:, ::2, :]              # [B, 2C, T] -> [B, C, T], channel stride 2T
        g = torch.randn(C, 1, generator=torch.Generator().manual_seed(1)).expand(B, C, T)  # strides (0, 1, 0)
        assert not x.is_contiguous()
        got = run_op(x, g, log_alpha, log_beta)
        launched_x = launches["forward"][0][0]
        assert launched_x.data_ptr() == x.data_ptr() and launched_x.stride() == x.stride()
        assert launches["backward"][0][0].stride() == g.stride()
        assert_matches_reference(got, x, g, log_alpha, log_beta, contiguous=True)

    def test_backward_is_deterministic(self, launches):
        x, g, log_alpha, log_beta = make_inputs((2, 3, 2100), torch.bfloat16)
        first = run_op(x, g, log_alpha, log_beta)
        second = run_op(x, g, log_alpha, log_beta)
        assert len(launches["backward"]) == 2
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        # The interpreter runs programs one by one, so it cannot show atomics racing: forbid them.
        import lyra_kernels.snake as kernels
        assert "tl.atomic_" not in inspect.getsource(kernels)

    def test_empty_input(self, launches):
        x, g, log_alpha, log_beta = make_inputs((2, 3, 0), torch.float32)
        y, grad_x, grad_la, grad_lb = run_op(x, g, log_alpha, log_beta)
        assert y.shape == grad_x.shape == (2, 3, 0)
        assert torch.equal(grad_la, torch.zeros(3)) and torch.equal(grad_lb, torch.zeros(3))

    def test_dispatch_rule(self, launches, monkeypatch):
        x, _, log_alpha, log_beta = make_inputs((1, 2, 5), torch.float32)
        snake(x, log_alpha, log_beta)
        assert len(launches["forward"]) == 1                      # CPU + TRITON_INTERPRET=1: Triton
        snake(x.double(), log_alpha.double(), log_beta.double())
        assert len(launches["forward"]) == 1                      # float64: PyTorch
        torch.compile(snake, fullgraph=True, backend="aot_eager")(x, log_alpha, log_beta)
        assert len(launches["forward"]) == 1                      # compiled on CPU: PyTorch, fused
        monkeypatch.delenv("TRITON_INTERPRET")
        snake(x, log_alpha, log_beta)
        assert len(launches["forward"]) == 1                      # CPU: PyTorch

    def test_opcheck(self, launches):
        # Fake-tensor and AOT checks need a GPU (the interpreter cannot run on fake tensors);
        # `test_triton_ops_trace_symbolically_on_fake_cuda_tensors` covers their tracing.
        opcheck_triton_ops(torch.float32, ("test_schema", "test_autograd_registration"))
        assert launches["forward"] and launches["backward"]


@pytest.mark.skipif(not HAS_TRITON or INTERPRETING, reason="needs triton; in-process when interpreting")
def test_triton_kernels_under_interpreter():
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
           f"{Path(__file__).resolve()}::TestTritonKernels"]
    result = subprocess.run(cmd, cwd=root, env={**os.environ, "TRITON_INTERPRET": "1"},
                            capture_output=True, text=True)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and "skipped" not in summary, result.stdout[-6000:] + result.stderr[-2000:]


# --- The op's PyTorch path and its torch.library / autograd integration ----------------------


def test_reference_backward_is_the_derivative_of_the_reference():
    x, g, log_alpha, log_beta = make_inputs((2, 3, 9), torch.float64)
    x, log_alpha, log_beta = (t.double().requires_grad_() for t in (x, log_alpha, log_beta))
    expected = torch.autograd.grad(snake_reference(x, log_alpha, log_beta), (x, log_alpha, log_beta), g)
    written = snake_reference_backward(g, x.detach(), log_alpha.detach(), log_beta.detach())
    for a, b in zip(written, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_cpu_path_matches_float64_reference(cpu_path, dtype):
    x, g, log_alpha, log_beta = make_inputs((2, 3, 37), dtype)
    if dtype == torch.float64:
        log_alpha, log_beta = log_alpha.double(), log_beta.double()
    got = run_op(x, g, log_alpha, log_beta)
    assert_matches_reference(got, x, g, log_alpha, log_beta)


def test_cpu_path_with_reduced_precision_parameters(cpu_path):
    """A model cast to bf16 (`--precision bf16`) has bf16 log-parameters: alpha and beta are
    still computed in float32, and the gradients come back in the parameters' dtype."""
    x, g, log_alpha, log_beta = make_inputs((2, 3, 37), torch.bfloat16)
    log_alpha, log_beta = log_alpha.bfloat16(), log_beta.bfloat16()
    got = run_op(x, g, log_alpha, log_beta)
    assert got[2].dtype == got[3].dtype == torch.bfloat16
    y_ref = snake_reference(x.double(), log_alpha.double(), log_beta.double())   # same rounded inputs
    assert ((got[0].double() - y_ref).abs() <= ULP[torch.bfloat16] * y_ref.abs() + 1e-6).all()


def test_cpu_path_strided_view(cpu_path):
    x, g, log_alpha, log_beta = make_inputs((2, 3, 11), torch.float32)
    x = x.transpose(1, 2).contiguous().transpose(1, 2)  # [B, C, T] with strides (T*C, 1, C)
    got = run_op(x, g.transpose(1, 2).contiguous().transpose(1, 2), log_alpha, log_beta)
    assert_matches_reference(got, x, g, log_alpha, log_beta)


def test_shape_errors():
    x = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match=r"\[B, C, T\]"):
        snake(x[0], torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="log_beta"):
        snake(x, torch.zeros(3), torch.zeros(4))


def test_gradcheck_and_gradgradcheck_cpu_float64(cpu_path):
    x, _, log_alpha, log_beta = make_inputs((2, 3, 5), torch.float64)
    inputs = tuple(t.double().requires_grad_() for t in (x, log_alpha, log_beta))
    assert torch.autograd.gradcheck(snake, inputs)
    assert torch.autograd.gradgradcheck(snake, inputs)  # the backward is plain differentiable ops


def saved_tensors(fn, *args) -> list[torch.Tensor]:
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return saved


def test_autograd_saves_only_input_and_parameters(cpu_path):
    x, _, log_alpha, log_beta = make_inputs((2, 3, 8), torch.float32)
    x, log_alpha, log_beta = (t.requires_grad_() for t in (x, log_alpha, log_beta))

    saved = saved_tensors(snake, x, log_alpha, log_beta)
    assert sorted(tuple(t.shape) for t in saved) == [(2, 3, 8), (3,), (3,)]
    assert {t.data_ptr() for t in saved} == {x.data_ptr(), log_alpha.data_ptr(), log_beta.data_ptr()}

    eager = saved_tensors(snake_reference, x, log_alpha, log_beta)
    assert sum(t.numel() for t in eager) > sum(t.numel() for t in saved)  # the formula keeps alpha*x, sin, ...


class ConvSnake(nn.Module):
    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, channels, 3, padding=1)
        self.log_alpha = nn.Parameter(0.3 * torch.randn(channels))
        self.log_beta = nn.Parameter(0.3 * torch.randn(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake(self.conv(x), self.log_alpha, self.log_beta) + 1.0  # [B, 2, T] -> [B, C, T]


def test_compiled_snake_is_fused_by_inductor_and_matches_float64(cpu_path):
    """What `build_model(compile=True)` relies on off-CUDA: inductor sees into Snake (no opaque
    op, no graph break) and computes it, with the add after it, in one generated loop per
    direction; values and all three gradients stay within float32 rounding of float64."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    model = ConvSnake()
    x = torch.randn(2, 2, 64)

    def output_and_grads(fn):
        model.zero_grad()
        y = fn(x)
        y.square().mean().backward()
        return [y.detach()] + [p.grad.clone() for p in (model.log_alpha, model.log_beta)]

    compiled = torch.compile(model, fullgraph=True)  # raises on a graph break
    got, (forward_code, backward_code) = run_and_get_code(output_and_grads, compiled)
    for code in (forward_code, backward_code):
        assert "lyra" not in code                       # no extern call to a custom op
        kernels = [k for k in code.split("cpp_fused_")[1:]]
        assert any("sin" in k.split("(")[0] for k in kernels), "no fused kernel computes sin"
    assert any("add" in k.split("(")[0] and "sin" in k.split("(")[0]
               for k in forward_code.split("cpp_fused_")[1:]), "Snake not fused with the add after it"

    # float64 reference: same weights, everything in float64
    ref = ConvSnake().double()
    ref.load_state_dict(model.state_dict())
    ref.zero_grad()
    y64 = ref(x.double())
    y64.square().mean().backward()
    for a, b in zip(got, [y64.detach(), ref.log_alpha.grad, ref.log_beta.grad]):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_TRITON or INTERPRETING, reason="needs triton, without the interpreter")
def test_triton_ops_trace_symbolically_on_fake_cuda_tensors():
    """What inductor does with the Triton ops on a GPU, checked without one: both ops trace on
    fake CUDA tensors whose time axis is symbolic (a compiled graph with a dynamic time axis),
    give the right output shapes and dtypes, and guard only on T >= 1024."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    import lyra_kernels.snake  # noqa: F401  (registers the ops)

    shape_env = ShapeEnv()
    mode = FakeTensorMode(shape_env=shape_env)
    dynamic_time = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.STATIC, DimDynamic.STATIC, DimDynamic.DYNAMIC])
    x = mode.from_tensor(torch.empty(2, 3, 5000), symbolic_context=dynamic_time)

    def forward_and_backward(x, g, log_alpha, log_beta):
        y = torch.ops.lyra.snake(x, log_alpha, log_beta, 1e-9)
        return y, *torch.ops.lyra.snake_backward(g, x, log_alpha, log_beta, 1e-9)

    with mode:
        x = x.to("cuda").bfloat16()
        g = torch.empty_like(x)
        log_alpha, log_beta = torch.zeros(3, device="cuda"), torch.zeros(3, device="cuda")
        graph = make_fx(forward_and_backward)(x, g, log_alpha, log_beta)
        y, grad_x, grad_la, grad_lb = graph(x, g, log_alpha, log_beta)
    assert isinstance(x.shape[-1], torch.SymInt)
    assert y.shape == grad_x.shape == x.shape and y.dtype == grad_x.dtype == torch.bfloat16
    assert grad_la.shape == grad_lb.shape == (3,) and grad_la.dtype == torch.float32
    assert [str(g.expr) for g in shape_env.guards] == [f"{x.shape[-1]} >= 1024"]


def test_import_is_lazy_and_triton_is_optional():
    code = (
        "import sys, torch\n"
        "import lyra\n"
        "assert 'triton' not in sys.modules and 'lyra_kernels' not in sys.modules, 'import side effect'\n"
        "sys.modules['triton'] = None  # as on a machine without triton\n"
        "from lyra.model.snake import snake_reference\n"
        "x = torch.randn(1, 2, 5, requires_grad=True)\n"
        "la, lb = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)\n"
        "y = lyra.snake(x, la, lb)\n"
        "y.sum().backward()\n"
        "torch.testing.assert_close(y, snake_reference(x, la, lb))\n"
        "assert 'lyra_kernels.snake' not in sys.modules\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # would route CPU tensors to Triton, were it installed
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
