"""The whole GPU suite in one command: checks, then timings, as Markdown for BENCHMARKS.md.

    pip install --no-deps -e .        # once, so that `lyra` and `lyra_kernels` import
    python tools/gpu_check.py         # [--shape 4 512 65536] [--reps 20] [--codec-seconds 60]
    python tools/gpu_check.py --smoke # the same code on the CPU, tiny sizes: checks the script

1. Snake correctness at a realistic size, fp32 and bf16: forward, grad_x, grad_log_alpha and
   grad_log_beta of `lyra.model.snake.snake` (the Triton op on CUDA) against the float64 reference
   on the GPU; the backward bit-identical run to run; a strided input; `torch.library.opcheck`
   of both ops; compiled (`fullgraph=True`, time axis dynamic) matches eager, and inductor's
   code launches Lyra's kernels (`_snake_fwd_kernel`, `_snake_bwd_kernel`).
2. Snake bandwidth: eager formula, compiled formula, the Triton op eagerly and compiled, in
   effective GB/s (forward reads x and writes y; forward+backward adds reading x and grad_y and
   writing grad_x) and as a fraction of a device-to-device copy. Medians of CUDA-event timings.
   Targets: forward >= 90%, forward+backward >= 85% of copy.
3. Training step of the default model (4 x 40,960 samples, bf16 autocast, multi-resolution
   STFT + KL loss, AdamW), with a validation pass between steps: the plain eager model,
   `build_model()` (Triton op) and `build_model(compile=True)`, time and peak memory
   (`max_memory_allocated`). Target: compiled >= 2x eager throughput at <= 0.5x its memory.
4. Codec throughput of the default model as `lyra encode/decode` runs it
   (`lyra.codec.inference.prepare_model`): whole file and streamed, fp32 and bf16, eager and
   `--compile`, in x realtime; bf16's SI-SDR against fp32.

Exits 1 if any check fails, 0 with "no CUDA device" where there is none (without --smoke).
Dynamo's recompile-limit fallback is an error throughout. Works with torch >= 2.6 and
triton >= 3.2 (the GPU image has torch 2.11 / triton 3.6; this machine 2.14 / 3.8).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from typing import Callable

import torch

from lyra.model.config import ModelConfig
from lyra.codec.inference import model_device_dtype, prepare_model
from lyra.eval.stft import MultiResolutionSTFTLoss
from lyra.train.losses.kl import kl_divergence
from lyra.eval.metrics import si_sdr
from lyra.model.vae import build_model
from lyra.model.snake import snake, snake_reference, snake_reference_backward
from lyra.codec.streaming import decode_stream, encode_stream

U32 = 2.0**-24
ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7}  # one unit in the last place of the output
FP32_TERMS = 64      # float32 evaluation error allowed, in u32 times the size of the terms
PARAM_RTOL = 1e-5    # parameter gradients: times sum |term| (1 + alpha|x|)


@dataclasses.dataclass(frozen=True)
class Setup:
    device: torch.device
    shape: tuple[int, int, int]     # Snake [B, C, T]
    reps: int
    model: ModelConfig
    train_batch: int
    train_samples: int
    codec_seconds: float
    smoke: bool


# ---------------------------------------------------------------------------------------
# 1. Snake correctness
# ---------------------------------------------------------------------------------------
def make_inputs(shape, dtype, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = (2 * torch.randn(shape, generator=gen, device=device)).to(dtype)
    g = torch.randn(shape, generator=gen, device=device).to(dtype)
    log_alpha = 0.5 * torch.randn(shape[1], generator=gen, device=device)
    log_beta = 0.5 * torch.randn(shape[1], generator=gen, device=device)
    return x, g, log_alpha, log_beta


def op_forward_backward(fn, x, g, log_alpha, log_beta):
    x, log_alpha, log_beta = (t.detach().requires_grad_() for t in (x, log_alpha, log_beta))
    y = fn(x, log_alpha, log_beta)
    return (y.detach(), *torch.autograd.grad(y, (x, log_alpha, log_beta), g))


def worst_error_ratio(got, x, g, log_alpha, log_beta) -> dict[str, float]:
    """max(|error| / allowed) per output against the float64 reference; <= 1 passes. One batch row at a time."""
    y, grad_x, grad_la, grad_lb = got
    la64, lb64 = log_alpha.double(), log_beta.double()
    alpha, beta = la64.exp().view(1, -1, 1), lb64.exp().view(1, -1, 1)  # [C] -> [1, C, 1]
    inv = 1 / (beta + 1e-9)
    ratios = {"y": 0.0, "grad_x": 0.0}
    ref_la, ref_lb = torch.zeros_like(la64), torch.zeros_like(lb64)
    l1_la, l1_lb = torch.zeros_like(la64), torch.zeros_like(lb64)
    for b in range(x.shape[0]):
        x64, g64 = x[b:b + 1].double(), g[b:b + 1].double()  # [1, C, T]
        ref_y = snake_reference(x64, la64, lb64)
        ref_gx, d_la, d_lb = snake_reference_backward(g64, x64, la64, lb64)
        s, sin2, ax = torch.sin(alpha * x64), torch.sin(2 * alpha * x64), alpha * x64.abs()
        for name, out, ref, size in (("y", y[b:b + 1], ref_y, x64.abs() + inv * (1 + ax)),
                                     ("grad_x", grad_x[b:b + 1], ref_gx, g64.abs() * (1 + inv * alpha * (1 + 2 * ax)))):
            bound = ULP[x.dtype] * ref.abs() + FP32_TERMS * U32 * size + 1e-7
            ratios[name] = max(ratios[name], ((out.double() - ref).abs() / bound).max().item())
        ref_la += d_la
        ref_lb += d_lb
        l1_la += (alpha * inv * (g64 * x64 * sin2).abs() * (1 + ax)).sum(dim=(0, 2))  # [1, C, T] -> [C]
        l1_lb += (beta * inv**2 * (g64 * s**2).abs() * (1 + ax)).sum(dim=(0, 2))
    ratios["grad_log_alpha"] = ((grad_la.double() - ref_la).abs() / (PARAM_RTOL * l1_la + 1e-7)).max().item()
    ratios["grad_log_beta"] = ((grad_lb.double() - ref_lb).abs() / (PARAM_RTOL * l1_lb + 1e-7)).max().item()
    return ratios


def check_snake(setup: Setup, report: Callable[[str, bool, str], None]) -> None:
    shape, device = setup.shape, setup.device
    for dtype in (torch.float32, torch.bfloat16):
        x, g, log_alpha, log_beta = make_inputs(shape, dtype, device)
        got = op_forward_backward(snake, x, g, log_alpha, log_beta)
        ratios = worst_error_ratio(got, x, g, log_alpha, log_beta)
        detail = ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
        report(f"{dtype} {list(shape)} vs float64 reference", all(v <= 1 for v in ratios.values()),
               f"(worst error / allowed: {detail})")
        again = op_forward_backward(snake, x, g, log_alpha, log_beta)
        report(f"{dtype} backward bit-identical on a second run", all(torch.equal(a, b) for a, b in zip(got, again)), "")
        del got, again

    x, g, log_alpha, log_beta = make_inputs((2, 64, 3001), torch.float32, device, seed=1)
    x_t = x.transpose(1, 2).contiguous().transpose(1, 2)  # [B, C, T] with strides (T*C, 1, C)
    ratios = worst_error_ratio(op_forward_backward(snake, x_t, g, log_alpha, log_beta), x_t, g, log_alpha, log_beta)
    report("strided input [2, 64, 3001] vs float64 reference", all(v <= 1 for v in ratios.values()), "")

    if device.type == "cuda":
        import lyra_kernels.snake  # noqa: F401  (registers the ops)

        x, g, la, lb = make_inputs((2, 3, 2048), torch.float32, device)
        leaves = [t.detach().requires_grad_() for t in (x, la, lb)]
        try:
            torch.library.opcheck(torch.ops.lyra.snake, (*leaves, 1e-9))
            torch.library.opcheck(torch.ops.lyra.snake_backward, (g, x, la, lb, 1e-9))
            report("torch.library.opcheck of lyra::snake and lyra::snake_backward", True, "")
        except Exception as exc:  # noqa: BLE001 - reported, the suite goes on
            report("torch.library.opcheck of lyra::snake and lyra::snake_backward", False, f"({exc})")

    compiled = torch.compile(snake, fullgraph=True, dynamic=True)
    worst = 0.0
    code = ""
    for T in (3001, 5000, 40960):
        x, g, log_alpha, log_beta = make_inputs((2, 64, T), torch.float32, device, seed=T)
        eager = op_forward_backward(snake, x, g, log_alpha, log_beta)
        if device.type == "cuda" and not code:
            from torch._inductor.utils import run_and_get_code

            got, codes = run_and_get_code(op_forward_backward, compiled, x, g, log_alpha, log_beta)
            code = "\n".join(codes)
        else:
            got = op_forward_backward(compiled, x, g, log_alpha, log_beta)
        worst = max(worst, *((a - b).abs().max().item() / (b.abs().max().item() + 1e-12) for a, b in zip(got, eager)))
    report("torch.compile(snake, fullgraph=True, dynamic=True) matches eager at 3 lengths", worst < 1e-5,
           f"(worst relative difference {worst:.2e})")
    if device.type == "cuda":
        launched = "_snake_fwd_kernel" in code and "_snake_bwd_kernel" in code
        report("the compiled graphs launch Lyra's Triton kernels", launched, "")


# ---------------------------------------------------------------------------------------
# 2. Snake bandwidth
# ---------------------------------------------------------------------------------------
def median_ms(fn: Callable[[], object], reps: int, device: torch.device,
              between: Callable[[], object] | None = None) -> float:
    """Median milliseconds of `fn` after 3 warm-up calls; `between` runs untimed before each call."""
    times = []
    for i in range(3 + reps):
        if between is not None:
            between()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end)
        else:
            start = time.perf_counter()
            fn()
            elapsed = 1e3 * (time.perf_counter() - start)
        if i >= 3:
            times.append(elapsed)
    return statistics.median(times)


def snake_table(setup: Setup) -> None:
    shape, device, reps = setup.shape, setup.device, setup.reps
    variants = {
        "eager formula": snake_reference,
        "compiled formula": torch.compile(snake_reference, dynamic=False),
        "lyra.snake (Triton op)": snake,
        "compiled lyra.snake": torch.compile(snake, fullgraph=True, dynamic=False),
    }
    print(f"\n## Snake bandwidth, shape {list(shape)}, median of {reps}\n")
    print("| dtype | variant | fwd ms | fwd GB/s | fwd / copy | fwd+bwd ms | fwd+bwd GB/s | fwd+bwd / copy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        x, g, log_alpha, log_beta = make_inputs(shape, dtype, device)
        nbytes = x.numel() * x.element_size()
        out = torch.empty_like(x)
        copy_gbs = 2 * nbytes / median_ms(lambda: out.copy_(x), reps, device) / 1e6
        del out
        leaves = [t.detach().requires_grad_() for t in (x, log_alpha, log_beta)]
        for name, fn in variants.items():
            with torch.no_grad():
                fwd_ms = median_ms(lambda: fn(x, log_alpha, log_beta), reps, device)
            both_ms = median_ms(lambda: torch.autograd.grad(fn(*leaves), leaves, g), reps, device)
            fwd_gbs = 2 * nbytes / fwd_ms / 1e6        # read x, write y
            both_gbs = 5 * nbytes / both_ms / 1e6      # + read x, grad_y, write grad_x
            print(f"| {str(dtype).removeprefix('torch.')} | {name} | {fwd_ms:.3f} | {fwd_gbs:.0f} | "
                  f"{fwd_gbs / copy_gbs:.2f} | {both_ms:.3f} | {both_gbs:.0f} | {both_gbs / copy_gbs:.2f} |")
        print(f"| {str(dtype).removeprefix('torch.')} | device copy | | {copy_gbs:.0f} | 1.00 | | | |")
        del x, g, leaves
        _empty_cache(device)


# ---------------------------------------------------------------------------------------
# 3. Training step
# ---------------------------------------------------------------------------------------
def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) / 2**20


def _train_model(setup: Setup, variant: str):
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = setup.model
    if variant == "eager formula":
        return build_model(dataclasses.replace(cfg, activation="snake_reference")).to(setup.device)
    return build_model(cfg, compile=variant == "compiled").to(setup.device)


def train_table(setup: Setup, report: Callable[[str, bool, str], None]) -> None:
    device, cfg = setup.device, setup.model
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(1)
    x = (0.1 * torch.randn(setup.train_batch, cfg.channels, setup.train_samples, generator=gen)).to(device)
    val = (0.1 * torch.randn(setup.train_batch + 1, cfg.channels, setup.train_samples, generator=gen)).to(device)
    stft = MultiResolutionSTFTLoss().to(device)
    rows = {}
    print(f"\n## Training step, {sum(p.numel() for p in build_model(cfg).parameters()):,}-parameter model, "
          f"{setup.train_batch} x {setup.train_samples} samples, {str(dtype).removeprefix('torch.')} autocast, "
          f"STFT + KL, AdamW, a validation pass between steps; median of {setup.reps}\n")
    for variant in ("eager formula", "build_model()", "compiled"):
        model = _train_model(setup, variant)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                y, mean, logvar = model(x)
            loss = stft(y.float(), x) + 1e-4 * kl_divergence(mean, logvar)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def validate():
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                model.decode(model.encode(val)[0])
            model.train()

        step()                                              # compile, the validation graphs too
        validate()
        peak = _peak_memory_mib(step, device)
        rows[variant] = (median_ms(step, setup.reps, device, between=validate), peak)
        del model, optimizer
        _empty_cache(device)
    base_ms, base_peak = rows["eager formula"]
    print("| variant | step ms | audio s/s | speedup vs eager formula | peak memory MiB | memory vs eager formula |")
    print("|---|---:|---:|---:|---:|---:|")
    seconds = setup.train_batch * setup.train_samples / cfg.sample_rate
    for variant, (ms, peak) in rows.items():
        mem = f"{peak:.0f}" if peak is not None else "n/a"
        mem_ratio = f"{peak / base_peak:.2f}x" if peak is not None and base_peak else "n/a"
        print(f"| {variant} | {ms:.1f} | {seconds / ms * 1e3:.2f} | {base_ms / ms:.2f}x | {mem} | {mem_ratio} |")
    if device.type == "cuda":
        ms, peak = rows["compiled"]
        report("compiled training step >= 2x eager throughput at <= 0.5x eager peak memory",
               base_ms / ms >= 2 and peak <= 0.5 * base_peak, f"({base_ms / ms:.2f}x, {peak / base_peak:.2f}x memory)")


# ---------------------------------------------------------------------------------------
# 4. Codec throughput
# ---------------------------------------------------------------------------------------
def codec_table(setup: Setup) -> None:
    device, cfg = setup.device, setup.model
    rate = cfg.sample_rate
    n = int(setup.codec_seconds * rate)
    t = torch.arange(n) / rate
    audio = torch.stack([0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(n),
                         0.3 * torch.sin(2 * torch.pi * 330 * t) + 0.05 * torch.randn(n)])[: cfg.channels]
    chunk = max(1, round(10.0 * cfg.frame_rate))
    print(f"\n## Codec, {setup.codec_seconds:g} s of stereo audio, x realtime (audio seconds per second), "
          f"best of {max(1, setup.reps // 5)}\n")
    print("| precision | compiled | encode | decode | stream encode | stream decode | SI-SDR vs fp32 (decode) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    fp32_out = None
    for precision in ("fp32", "bf16"):
        for compiled in (False, True):
            torch._dynamo.reset()
            torch.manual_seed(0)
            model = prepare_model(build_model(cfg), device=device, precision=precision, compile=compiled)
            _, dt = model_device_dtype(model)

            def encode():
                with torch.inference_mode():
                    return model.encode(audio[None].to(device, dt))[0][0].float()

            z = encode().cpu()

            def decode():
                with torch.inference_mode():
                    return model.decode(z[None].to(device, dt), n)[0].float()

            def stream_encode():
                return torch.cat(list(encode_stream(model, audio.split(rate, dim=-1), chunk)), dim=-1)

            def stream_decode():
                return torch.cat(list(decode_stream(model, z.split(32, dim=-1), chunk, length=n)), dim=-1)

            speeds = []
            out = None
            for fn in (encode, decode, stream_encode, stream_decode):
                result = fn()                                   # compile
                out = result.cpu() if fn is decode else out
                best = min(_seconds(fn, device) for _ in range(max(1, setup.reps // 5)))
                speeds.append(setup.codec_seconds / best)
            if precision == "fp32" and not compiled:
                fp32_out = out
            quality = "" if fp32_out is None or out is fp32_out else f"{float(si_sdr(fp32_out[None], out[None])):.1f} dB"
            print(f"| {precision} | {'yes' if compiled else 'no'} | " + " | ".join(f"{s:.2f}x" for s in speeds)
                  + f" | {quality} |")
            del model
            _empty_cache(device)


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[4, 512, 65536], metavar=("B", "C", "T"))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--codec-seconds", type=float, default=60.0)
    parser.add_argument("--smoke", action="store_true", help="run every section on the CPU at tiny sizes (checks the script)")
    args = parser.parse_args(argv)
    if args.smoke:
        setup = Setup(torch.device("cpu"), (2, 8, 300), 2,
                      ModelConfig(base_channels=4, latent_dim=4, c_mults=(1, 2), strides=(4, 4), dilations=(1,)),
                      2, 4096, 0.2, True)
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    else:
        setup = Setup(torch.device("cuda"), tuple(args.shape), args.reps, ModelConfig(), 4, 40960,
                      args.codec_seconds, False)
    failures: list[str] = []

    def report(name: str, ok: bool, detail: str = "") -> None:
        print(f"- {'PASS' if ok else 'FAIL'} {name} {detail}".rstrip())
        if not ok:
            failures.append(name)

    if setup.device.type == "cuda":
        import triton
        print(f"# Lyra on {torch.cuda.get_device_name()} (torch {torch.__version__}, triton {triton.__version__})\n")
    else:
        print(f"# Lyra smoke run on the CPU (torch {torch.__version__})\n")
    print("## Checks")
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        check_snake(setup, report)
        snake_table(setup)
        train_table(setup, report)
        codec_table(setup)
    if failures:
        print(f"\nFAILED: {len(failures)} check(s): {'; '.join(failures)}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
