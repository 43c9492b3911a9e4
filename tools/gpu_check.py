"""Check and time the fused Snake op on a CUDA GPU, in one command.

    pip install --no-deps -e .        # once, so that `lyra` and `lyra_kernels` import
    python tools/gpu_check.py         # [--shape 4 512 65536] [--reps 20]

1. Correctness at a realistic size, fp32 and bf16: forward, grad_x, grad_log_alpha and
   grad_log_beta of the Triton op against the float64 reference on the GPU; the backward is
   bit-identical run to run; a strided (transposed) input; `torch.compile(fullgraph=True)`.
2. A Markdown table: eager PyTorch formula vs torch.compile'd formula vs the Triton op, forward
   and forward+backward, in effective GB/s (the bytes the op needs: forward reads x and writes
   y; backward reads x and grad_y and writes grad_x) and as a fraction of a device-to-device
   copy's bandwidth. Times are medians of CUDA-event timings.

Exits 1 if any check fails, 0 with "no CUDA device" where there is none. Works with
torch >= 2.6 and triton >= 3.2 (checked against the APIs of torch 2.11 / triton 3.6).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from lyra.snake import snake, snake_reference, snake_reference_backward

U32 = 2.0**-24
ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7}  # one unit in the last place of the output
FP32_TERMS = 64      # float32 evaluation error allowed, in u32 times the size of the terms
PARAM_RTOL = 1e-5    # parameter gradients: times sum |term| (1 + alpha|x|)


def make_inputs(shape, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = (2 * torch.randn(shape, generator=gen, device="cuda")).to(dtype)
    g = torch.randn(shape, generator=gen, device="cuda").to(dtype)
    log_alpha = 0.5 * torch.randn(shape[1], generator=gen, device="cuda")
    log_beta = 0.5 * torch.randn(shape[1], generator=gen, device="cuda")
    return x, g, log_alpha, log_beta


def op_forward_backward(x, g, log_alpha, log_beta):
    x, log_alpha, log_beta = (t.detach().requires_grad_() for t in (x, log_alpha, log_beta))
    y = snake(x, log_alpha, log_beta)
    return (y.detach(), *torch.autograd.grad(y, (x, log_alpha, log_beta), g))


def worst_error_ratio(got, x, g, log_alpha, log_beta) -> dict[str, float]:
    """max(|error| / allowed) per output against the float64 reference; <= 1 passes. One batch row at a time."""
    y, grad_x, grad_la, grad_lb = got
    la64, lb64 = log_alpha.double(), log_beta.double()
    alpha, beta = la64.exp().view(1, -1, 1), lb64.exp().view(1, -1, 1)  # [C] -> [1, C, 1]
    inv = 1 / (beta + 1e-9)
    ratios = {"y": 0.0, "grad_x": 0.0}
    ref_la = torch.zeros_like(la64); ref_lb = torch.zeros_like(lb64)
    l1_la = torch.zeros_like(la64); l1_lb = torch.zeros_like(lb64)
    for b in range(x.shape[0]):
        x64, g64 = x[b:b + 1].double(), g[b:b + 1].double()  # [1, C, T]
        ref_y = snake_reference(x64, la64, lb64)
        ref_gx, d_la, d_lb = snake_reference_backward(g64, x64, la64, lb64)
        s, sin2, ax = torch.sin(alpha * x64), torch.sin(2 * alpha * x64), alpha * x64.abs()
        for name, out, ref, size in (("y", y[b:b + 1], ref_y, x64.abs() + inv * (1 + ax)),
                                     ("grad_x", grad_x[b:b + 1], ref_gx, g64.abs() * (1 + inv * alpha * (1 + 2 * ax)))):
            bound = ULP[x.dtype] * ref.abs() + FP32_TERMS * U32 * size + 1e-7
            ratios[name] = max(ratios[name], ((out.double() - ref).abs() / bound).max().item())
        ref_la += d_la; ref_lb += d_lb
        l1_la += (alpha * inv * (g64 * x64 * sin2).abs() * (1 + ax)).sum(dim=(0, 2))  # [1, C, T] -> [C]
        l1_lb += (beta * inv**2 * (g64 * s**2).abs() * (1 + ax)).sum(dim=(0, 2))
    ratios["grad_log_alpha"] = ((grad_la.double() - ref_la).abs() / (PARAM_RTOL * l1_la + 1e-7)).max().item()
    ratios["grad_log_beta"] = ((grad_lb.double() - ref_lb).abs() / (PARAM_RTOL * l1_lb + 1e-7)).max().item()
    return ratios


def check(shape) -> list[str]:
    failures = []

    def report(name: str, ok: bool, detail: str = "") -> None:
        print(f"- {'PASS' if ok else 'FAIL'} {name} {detail}")
        if not ok:
            failures.append(name)

    for dtype in (torch.float32, torch.bfloat16):
        x, g, log_alpha, log_beta = make_inputs(shape, dtype)
        got = op_forward_backward(x, g, log_alpha, log_beta)
        ratios = worst_error_ratio(got, x, g, log_alpha, log_beta)
        detail = ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
        report(f"{dtype} {list(shape)} vs float64 reference", all(v <= 1 for v in ratios.values()),
               f"(worst error / allowed: {detail})")
        again = op_forward_backward(x, g, log_alpha, log_beta)
        report(f"{dtype} backward bit-identical on a second run", all(torch.equal(a, b) for a, b in zip(got, again)))
        del got, again

    x, g, log_alpha, log_beta = make_inputs((2, 64, 3001), torch.float32, seed=1)
    x_t = x.transpose(1, 2).contiguous().transpose(1, 2)  # [B, C, T] with strides (T*C, 1, C)
    ratios = worst_error_ratio(op_forward_backward(x_t, g, log_alpha, log_beta), x_t, g, log_alpha, log_beta)
    report("strided input [2, 64, 3001] vs float64 reference", all(v <= 1 for v in ratios.values()))

    def loss(x, log_alpha, log_beta):
        return snake(x, log_alpha, log_beta).square().mean()

    leaves = [t.detach().requires_grad_() for t in (x, log_alpha, log_beta)]
    eager = torch.autograd.grad(loss(*leaves), leaves)
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(*leaves), leaves)
    report("torch.compile(fullgraph=True) matches eager",
           all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(compiled, eager)))
    return failures


def median_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def timing_table(shape, reps: int) -> None:
    compiled_formula = torch.compile(snake_reference)
    variants = {"eager formula": snake_reference, "compiled formula": compiled_formula, "Triton op": snake}
    print("| dtype | variant | fwd ms | fwd GB/s | fwd / copy | fwd+bwd ms | fwd+bwd GB/s | fwd+bwd / copy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        x, g, log_alpha, log_beta = make_inputs(shape, dtype)
        nbytes = x.numel() * x.element_size()
        out = torch.empty_like(x)
        copy_gbs = 2 * nbytes / median_ms(lambda: out.copy_(x), reps) / 1e6
        del out
        leaves = [t.detach().requires_grad_() for t in (x, log_alpha, log_beta)]
        for name, fn in variants.items():
            with torch.no_grad():
                fwd_ms = median_ms(lambda: fn(x, log_alpha, log_beta), reps)
            both_ms = median_ms(lambda: torch.autograd.grad(fn(*leaves), leaves, g), reps)
            fwd_gbs = 2 * nbytes / fwd_ms / 1e6        # read x, write y
            both_gbs = 5 * nbytes / both_ms / 1e6      # + read x, grad_y, write grad_x
            print(f"| {str(dtype).removeprefix('torch.')} | {name} | {fwd_ms:.3f} | {fwd_gbs:.0f} | "
                  f"{fwd_gbs / copy_gbs:.2f} | {both_ms:.3f} | {both_gbs:.0f} | {both_gbs / copy_gbs:.2f} |")
        print(f"| {str(dtype).removeprefix('torch.')} | device copy | | {copy_gbs:.0f} | 1.00 | | | |")
        del x, g, leaves
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[4, 512, 65536], metavar=("B", "C", "T"))
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0

    import triton
    print(f"# Snake on {torch.cuda.get_device_name()} (torch {torch.__version__}, triton {triton.__version__})\n")
    print("## Checks")
    failures = check(tuple(args.shape))
    print(f"\n## Timing, shape {args.shape}, median of {args.reps}\n")
    timing_table(tuple(args.shape), args.reps)
    if failures:
        print(f"\nFAILED: {len(failures)} check(s): {'; '.join(failures)}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
