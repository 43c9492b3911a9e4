"""The Triton kernels compile to cubin for real GPU targets, on a machine without a GPU.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", cap, 32))` runs Triton's whole
pipeline (TTIR, TTGIR, LLVM IR, PTX, then the wheel's own ptxas) for a named target, no device
or driver needed. So a kernel edit that no longer compiles fails here, not on a user's GPU.

What is compiled is what the launchers launch: `snake_forward` / `snake_backward` are called on
CPU tensors with `wrap_triton` replaced by a recorder, and each recorded launch (pointer
dtypes, ints, the constexprs EPS and BLOCK_T, num_warps) becomes a signature. It is the
generic variant: no alignment or equal-to-1 specialisation of the arguments.

Compiled: each kernel, for each input dtype the op accepts (log-parameters float32, and in x's
dtype as in a model cast with `.to(dtype)`), for sm_80 and sm_90, at the launch configuration of
rows of 1024 or more; and at every shorter-row configuration (smaller BLOCK_T and num_warps),
for each dtype with parameters in x's dtype. About 100 compiles, 20-30 s on two CPU cores. Each
test has an empty Triton cache, so every compile runs the whole pipeline.

Under TRITON_INTERPRET=1 the kernels are interpreter functions, which cannot be compiled: the
tests then run in a child process started without the variable.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (a Linux-only dependency)")

import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import lyra_kernels.snake as kernels  # noqa: E402
from lyra.model.snake import EPS  # noqa: E402  (what `lyra.model.snake.snake` passes as eps)

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"  # as this process started
TARGETS = {"sm_80": 80, "sm_90": 90}
POINTER_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
# (x dtype, log-parameter dtype): float32 parameters (training, autocast) and parameters in x's
# dtype (a model cast with `.to(dtype)`, as `lyra encode --precision bf16` runs it).
DTYPES = [(torch.float32, torch.float32), (torch.float16, torch.float32), (torch.float16, torch.float16),
          (torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16)]
KERNELS = ["_snake_fwd_kernel", "_snake_bwd_kernel"]
LONG_ROW = 4 * kernels.MAX_BLOCK_T  # any real use: T >= MAX_BLOCK_T


def _short_rows() -> list[int]:
    """One row length per other (BLOCK_T, num_warps) that `_launch_config` picks, T = 1, 2, 4, ..."""
    seen = {kernels._launch_config(LONG_ROW)[::2]: LONG_ROW}
    T = 1
    while T < kernels.MAX_BLOCK_T:
        seen.setdefault(kernels._launch_config(T)[::2], T)
        T *= 2
    return [t for t in seen.values() if t != LONG_ROW]


def dtype_id(pair) -> str:
    return "-".join(str(d).removeprefix("torch.") for d in pair)


def recorded_launches(T: int, dtype: torch.dtype, param_dtype: torch.dtype) -> dict[str, tuple]:
    """{kernel name: (kernel, args, kwargs)} of the launches `snake_forward` and `snake_backward`
    make for a [2, 3, T] input, recorded instead of run."""
    launches: dict[str, tuple] = {}

    def record(kernel):
        class Grid:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    launches[kernel.__name__] = (kernel, args, kwargs)
                return launch
        return Grid()

    x = torch.zeros(2, 3, T, dtype=dtype)
    log_alpha, log_beta = torch.zeros(3, dtype=param_dtype), torch.zeros(3, dtype=param_dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "wrap_triton", record)
        kernels.snake_forward(x, log_alpha, log_beta, EPS)
        kernels.snake_backward(x, x, log_alpha, log_beta, EPS)
    return launches


def source_of(kernel, args, kwargs) -> tuple[ASTSource, dict]:
    """The ASTSource of one launch (every argument typed as the JIT would) and its options (num_warps)."""
    bound = dict(zip(kernel.arg_names, args)) | {k: v for k, v in kwargs.items() if k in kernel.arg_names}
    missing = set(kernel.arg_names) - set(bound)
    assert not missing, f"{kernel.__name__}: launched without {missing}"
    signature, constexprs = {}, {}
    for name, param in zip(kernel.arg_names, kernel.params):
        value = bound[name]
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = POINTER_TYPES[value.dtype]
        elif isinstance(value, int) and not isinstance(value, bool):
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
        else:
            raise TypeError(f"{kernel.__name__}: no Triton type for argument {name} = {value!r}")
    options = {k: v for k, v in kwargs.items() if k not in kernel.arg_names}
    return ASTSource(fn=kernel, signature=signature, constexprs=constexprs), options


def compile_for(src: ASTSource, options: dict, capability: int):
    return triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options)


def assert_built(compiled, name: str, capability: int) -> None:
    cubin, ptx = compiled.asm["cubin"], compiled.asm["ptx"]
    assert isinstance(cubin, bytes) and cubin.startswith(b"\x7fELF"), "no cubin"
    assert re.search(rf"\.entry\s+{name}\s*\(", ptx), f"the PTX has no entry {name}"
    assert re.search(rf"^\.target\s+sm_{capability}a?\b", ptx, re.MULTILINE), f"the PTX is not for sm_{capability}"


@pytest.fixture(autouse=True)
def fresh_triton_cache(tmp_path, monkeypatch):
    """Every compile runs Triton's pipeline and ptxas: an empty cache directory per test."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))


compilable = pytest.mark.skipif(
    INTERPRETING or "constexprs" not in inspect.signature(ASTSource).parameters,
    reason="TRITON_INTERPRET=1: run by test_kernel_targets_without_the_interpreter's child process"
    if INTERPRETING else f"Triton {triton.__version__} has no ASTSource(constexprs=...) (Triton >= 3.3), "
    "the API these tests compile with")


def check_compiles(T: int, dtypes, kernel_name: str, target: str) -> None:
    kernel, args, kwargs = recorded_launches(T, *dtypes)[kernel_name]
    block_t, _, num_warps = kernels._launch_config(T)
    assert (kwargs["BLOCK_T"], kwargs["num_warps"]) == (block_t, num_warps)
    src, options = source_of(kernel, args, kwargs)
    assert_built(compile_for(src, options, TARGETS[target]), kernel_name, TARGETS[target])


@compilable
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtypes", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kernel_compiles_for_target(kernel_name, dtypes, target):
    check_compiles(LONG_ROW, dtypes, kernel_name, target)


@compilable
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("T", _short_rows(), ids=lambda T: f"BLOCK_T{kernels._launch_config(T)[0]}")
@pytest.mark.parametrize("dtypes", DTYPES[::2], ids=dtype_id)
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kernel_compiles_for_short_rows(kernel_name, dtypes, T, target):
    check_compiles(T, dtypes, kernel_name, target)


def test_launch_configurations_are_all_covered():
    # Every (BLOCK_T, num_warps) `_launch_config` can pick has a row length in one of the tests above.
    picked = {kernels._launch_config(T)[::2] for T in range(1, 3 * kernels.MAX_BLOCK_T, 7)}
    covered = {kernels._launch_config(T)[::2] for T in [LONG_ROW, *_short_rows()]}
    assert picked == covered


# --- The harness reports a kernel that does not compile ------------------------------------


@triton.jit
def _copy_kernel(X, Y, N, BLOCK: tl.constexpr):
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + t, tl.load(X + t, mask=t < N), mask=t < N)


@triton.jit
def _broken_copy_kernel(X, Y, N, BLOCK: tl.constexpr):
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + t, tl.load(X + t * 0.5, mask=t < N), mask=t < N)  # type error: pointer + float offset


@compilable
@pytest.mark.parametrize("target", TARGETS)
def test_a_type_error_fails_compilation(target):
    x, y = torch.zeros(8), torch.zeros(8)
    for kernel in (_copy_kernel, _broken_copy_kernel):
        src, options = source_of(kernel, (x, y, 8), {"BLOCK": 16, "num_warps": 1})
        if kernel is _copy_kernel:
            assert_built(compile_for(src, options, TARGETS[target]), kernel.__name__, TARGETS[target])
        else:
            with pytest.raises(triton.compiler.errors.CompilationError):
                compile_for(src, options, TARGETS[target])


if INTERPRETING:
    def test_kernel_targets_without_the_interpreter():
        root = Path(__file__).resolve().parents[1]
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
                                 str(Path(__file__).resolve())], cwd=root, env=env, capture_output=True, text=True)
        summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        assert result.returncode == 0 and "skipped" not in summary, result.stdout[-6000:] + result.stderr[-2000:]
