"""Stable Audio Open's VAE: stable-audio-tools' own modules vs the same weights imported into Lyra.

    python tools/sat_bench.py                                  # SAO 1.0's size, 2 s stereo, CPU
    python tools/sat_bench.py --device cuda --seconds 30 --rounds 10 --precision bf16   # a GPU

Builds stable-audio-tools' Oobleck VAE at Stable Audio Open 1.0's size from its own code
(`tools/stable_audio_reference.py`; random weights: only speed is measured here, equivalence
is tests/test_import_sat.py), saves it as its users have it, imports it with the function
behind `lyra import stable-audio-tools`, and times, in interleaved rounds on the same input:

    stable-audio-tools   its encoder (then the bottleneck's mean) and its decoder, eager
    lyra                 `prepare_model(compile=False)`: what `lyra encode/decode` runs
    lyra --compile       `prepare_model(compile=True)`:  what `lyra encode/decode --compile` runs

``--precision bf16|fp16`` runs the Lyra variants in that precision (stable-audio-tools runs
fp32, as its own encode/decode do). Printed: median seconds per call, real-time factor,
speedup over stable-audio-tools, and the largest difference from its output (fp32: float
rounding). ``--json PATH`` writes the figures too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import stable_audio_reference as reference
from lyra.model.importers.stable_audio_tools import import_vae
from lyra.codec.inference import prepare_model
from lyra.model.vae import build_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="stereo audio per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--tiny", action="store_true", help="a tiny model (for tests), not SAO 1.0's")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    sat = reference.load()
    cfg = reference.config(4, [1, 2, 4], [2, 4, 4], 6) if args.tiny else reference.STABLE_AUDIO_OPEN_1_0
    theirs = reference.build(sat, cfg, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "vae.safetensors"
        save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(src))
        found = import_vae(src, final_tanh=False)
    eager = build_model(found.config)
    eager.load_state_dict(found.weights)
    compiled = build_model(found.config)
    compiled.load_state_dict(found.weights)
    variants = {
        "stable-audio-tools": theirs.to(device),
        "lyra": prepare_model(eager, device=device, precision=args.precision, compile=False),
        "lyra --compile": prepare_model(compiled, device=device, precision=args.precision, compile=True),
    }
    hop = found.config.hop_length
    frames = max(1, round(args.seconds * found.config.sample_rate / hop))
    x = 0.5 * torch.randn(1, 2, frames * hop, generator=torch.Generator().manual_seed(1)).to(device)

    def run(name: str, model) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        dtype = next(model.parameters()).dtype
        with torch.inference_mode():
            sync(device)
            t0 = time.perf_counter()
            if name == "stable-audio-tools":
                mean = model.encoder(x).chunk(2, dim=1)[0]
            else:
                mean = model.encode(x.to(dtype))[0]
            sync(device)
            t1 = time.perf_counter()
            y = model.decoder(mean) if name == "stable-audio-tools" else model.decode(mean)
            sync(device)
            t2 = time.perf_counter()
        return mean.float(), y.float(), t1 - t0, t2 - t1

    outputs = {}
    for name, model in variants.items():          # warm-up (compiles the compiled variant)
        for _ in range(2):
            outputs[name] = run(name, model)[:2]
    times: dict[str, dict[str, list[float]]] = {n: {"encode": [], "decode": []} for n in variants}
    for _ in range(args.rounds):
        for name, model in variants.items():
            _, _, enc, dec = run(name, model)
            times[name]["encode"].append(enc)
            times[name]["decode"].append(dec)

    audio_s = x.shape[-1] / found.config.sample_rate
    params = sum(p.numel() for p in eager.parameters())
    print(f"Stable Audio Open VAE ({params:,} parameters), {audio_s:.2f} s stereo, {device}, "
          f"Lyra in {args.precision}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds\n")
    print("| call | variant | median s | x real time | speedup vs stable-audio-tools | max abs diff vs it |")
    print("|---|---|---|---|---|---|")
    report = {"device": str(device), "audio_seconds": audio_s, "precision": args.precision,
              "parameters": params, "torch": torch.__version__, "threads": torch.get_num_threads(), "results": {}}
    for call, index in (("encode", 0), ("decode", 1)):
        base = statistics.median(times["stable-audio-tools"][call])
        ref = outputs["stable-audio-tools"][index]
        for name in variants:
            med = statistics.median(times[name][call])
            diff = (outputs[name][index] - ref).abs().max().item()
            print(f"| {call} | {name} | {med:.3f} | {audio_s / med:.2f} | {base / med:.2f}x | {diff:.2e} |")
            report["results"][f"{call}/{name}"] = {"median_s": med, "speedup": base / med, "max_abs_diff": diff,
                                                   "times_s": times[name][call]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
