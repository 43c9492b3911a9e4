"""What reduced precision costs the codec: the same audio through `lyra encode/decode`'s model
in fp32 and in bf16 / fp16, compared (BENCHMARKS.md, "Reduced precision").

    python tools/precision_check.py                      # default model, 5 s, fp32 vs bf16 and fp16
    python tools/precision_check.py --model small --seconds 20 --compile

The input is synthetic voiced stereo audio (`lyra.audio.synth.voiced_clip`); the model has
random weights (seed 0), as no trained weights ship. Each precision is prepared exactly as
the CLI's ``--precision`` does (`lyra.codec.inference.prepare_model`). Printed per precision: the
relative error of the latent means against fp32, the SI-SDR of the decoded audio against the
fp32 decode (the cost in quality), the SI-SDR of a full round trip (encode and decode in that
precision) against the fp32 round trip, and the seconds each took (on a CPU without native
bf16/fp16 these run emulated: slow, but the numbers are the same as on hardware that has them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lyra.model.config import ModelConfig
from lyra.codec.inference import decode_latents, encode_mean, native_precision, precision_dtype, prepare_model
from lyra.eval.metrics import si_sdr
from lyra.model.vae import build_model
from lyra.audio.synth import voiced_clip


def encode(model, audio: torch.Tensor) -> torch.Tensor:
    """[C, T] -> posterior mean [D, F], float32 on the CPU."""
    return encode_mean(model, audio[None])[0]


def decode(model, latents: torch.Tensor, length: int) -> torch.Tensor:
    """[D, F] -> [C, length], float32 on the CPU."""
    return decode_latents(model, latents[None], length)[0]


def run(model, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(posterior mean, round-trip audio, seconds for both)."""
    start = time.perf_counter()
    mean = encode(model, audio)
    return mean, decode(model, mean, audio.shape[-1]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("default", "small"), default="default")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cfg = ModelConfig() if args.model == "default" else ModelConfig.small()
    torch.manual_seed(0)
    weights = build_model(cfg).state_dict()
    audio = torch.from_numpy(voiced_clip(np.random.default_rng(0), args.seconds, cfg.sample_rate)).float()

    def prepared(precision: str):
        model = build_model(cfg)
        model.load_state_dict(weights)
        return prepare_model(model, device=args.device, precision=precision, compile=args.compile)

    ref_mean, ref_audio, ref_seconds = run(prepared("fp32"), audio)
    print(f"{args.model} model, {args.seconds:g} s of voiced audio, device {args.device}, "
          f"compile {args.compile}, torch {torch.__version__}")
    print("| precision | native here | latent rel. error vs fp32 | SI-SDR decode vs fp32 (dB) | "
          "SI-SDR round trip vs fp32 (dB) | seconds (encode + decode) |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| fp32 | yes | 0 | inf | inf | {ref_seconds:.1f} |")
    for precision in args.precisions:
        model = prepared(precision)
        native = native_precision(torch.device(args.device), precision_dtype(precision))
        mean, round_trip, seconds = run(model, audio)
        decoded = decode(model, ref_mean, audio.shape[-1])      # the fp32 latents, decoded in `precision`
        rel = float((mean - ref_mean).norm() / ref_mean.norm())
        print(f"| {precision} | {'yes' if native else 'no (emulated)'} | {rel:.2e} | "
              f"{float(si_sdr(ref_audio[None], decoded[None])):.1f} | "
              f"{float(si_sdr(ref_audio[None], round_trip[None])):.1f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
