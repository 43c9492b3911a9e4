"""Stage-by-stage vs whole-model compilation of one model, timed in interleaved rounds.

    python tools/compile_ab.py                       # small model, 65,536 samples, 15 rounds
    python tools/compile_ab.py --model default --samples 90112 --rounds 5

The benchmark suite runs its variants one after another, so a change of load on a shared
machine between two variants reads as a difference between them. Here every round times each
variant once, in turn, so the ratios compare like with like. Variants (same weights, Lyra's
Snake in all of them, inference under `torch.no_grad`):

    eager    build_model()
    staged   build_model(compile=True): every stage compiled on its own (`lyra.model.compilation`)
    whole    build_model(), then one `torch.compile` of the encoder and one of the decoder

Each round also times a 2048 x 2048 float32 matmul, the machine's practical peak: the
convolutions are matmul-like, so GFLOP/s over that peak says how much room compilation has left.
FLOPs are counted once, on the eager model, with `torch.utils.flop_counter`.

Printed: per call and variant the median milliseconds, the speedup over eager, GFLOP/s and the
fraction of the matmul's median GFLOP/s in the same rounds. ``--profile`` adds where one
call of the staged model spends its CPU time (`torch.profiler`): convolutions vs the compiled
graphs' own (fused element-wise) code.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

from lyra.model.config import ModelConfig
from lyra.model.vae import build_model


def variants(cfg: ModelConfig) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    weights = build_model(cfg).state_dict()
    built = {}
    for name in ("eager", "staged", "whole"):
        model = build_model(cfg, compile=name == "staged").eval()
        model.load_state_dict(weights)
        if name == "whole":
            model.encoder.compile()
            model.decoder.compile()
        built[name] = model
    return built


def counted_flops(call, model) -> int:
    with FlopCounterMode(display=False) as counter:
        call(model)
    return counter.get_total_flops()


def time_shares(call, model) -> str:
    """Where one call spends its CPU time: convolutions, and the compiled graphs' own code."""
    with profile() as prof:
        call(model)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key)
    graphs = sum(e.self_cpu_time_total for e in events if e.key.startswith("## Call CompiledFxGraph"))
    return f"convolutions {conv / total:.0%}, compiled element-wise code {graphs / total:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("small", "default"), default="small")
    parser.add_argument("--samples", type=int, default=32 * 2048, help="clip length, a multiple of 2048")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="also profile one staged call of each")
    args = parser.parse_args()

    cfg = ModelConfig.small() if args.model == "small" else ModelConfig()
    models = variants(cfg)
    audio = torch.randn(1, cfg.channels, args.samples)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    with torch.no_grad():
        latents = models["eager"].encode(audio)[0]
        calls = {"encode": lambda m: m.encode(audio), "decode": lambda m: m.decode(latents, args.samples)}
        flops = {op: counted_flops(call, models["eager"]) for op, call in calls.items()}
        for call in calls.values():          # warm-up: compilation happens here
            for model in models.values():
                call(model)
                call(model)
        times = {(op, name): [] for op in calls for name in models}
        matmul = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            a @ b
            matmul.append(time.perf_counter() - start)
            for op, call in calls.items():
                for name, model in models.items():
                    start = time.perf_counter()
                    call(model)
                    times[op, name].append(time.perf_counter() - start)
        shares = {op: time_shares(call, models["staged"]) for op, call in calls.items()} if args.profile else {}

    peak = 2 * 2048**3 / statistics.median(matmul) / 1e9
    print(f"{args.model} model, {args.samples} samples, {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"2048 x 2048 fp32 matmul: {peak:.0f} GFLOP/s (median)")
    print("| call | variant | median ms | vs eager | GFLOP/s | of matmul peak |")
    print("|---|---|---:|---:|---:|---:|")
    for (op, name), seconds in times.items():
        median = statistics.median(seconds)
        gflops = flops[op] / median / 1e9
        print(f"| {op} | {name} | {median * 1e3:.1f} | {statistics.median(times[op, 'eager']) / median:.2f}x "
              f"| {gflops:.0f} | {gflops / peak:.0%} |")
    for op, text in shares.items():
        print(f"staged {op}, CPU time by torch.profiler: {text}")


if __name__ == "__main__":
    main()
