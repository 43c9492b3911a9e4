"""The implementations a benchmark compares, and how each is built.

    variant              Snake                                   compiled                        built by
    eager                the plain formula (`snake_reference`)   no                              <- the baseline
    lyra                 `lyra.model.snake.snake`, as shipped          no                              build_model()
    compile              `lyra.model.snake.snake`, as shipped          stage by stage, as shipped      build_model(compile=True)
    reference_compiled   the plain formula                       encoder and decoder whole       torch.compile(encoder), (decoder)

`lyra` and `compile` are exactly what users run: `lyra.model.snake.snake` takes the fused Triton
kernels on CUDA and `SnakeFunction` elsewhere, so on a GPU `lyra` is the Triton op eagerly and
`compile` the Triton op inside compiled graphs; nothing here swaps an implementation in. The
codec benchmarks build them with `lyra.codec.inference.prepare_model`, the function behind `lyra
encode/decode [--compile] [--precision]`. `eager` is the built-in activation `snake_reference`
(the formula under autograd). `reference_compiled` is what a user gets from a single
`torch.compile` of a plain PyTorch model of the same architecture: the bar the shipped
compiled path must clear.

Each variant may also carry a precision: the codec's ``fp32``/``bf16`` (weights cast), which
`Variant.skip_reason` skips where the device has no native support (emulated bf16 on a CPU
without AVX-512 BF16 runs ~25x slower than fp32 and would only measure the emulation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
import torch._dynamo

from lyra.model.config import ModelConfig
from lyra.codec.inference import native_precision, precision_dtype, prepare_model
from lyra.model.vae import VAE, build_model

REFERENCE_ACTIVATION = "snake_reference"


@dataclass(frozen=True)
class Variant:
    name: str
    shipped: bool          # Lyra's Snake (`lyra.model.snake.snake`), else the plain formula
    compiled: bool
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return self.name if self.precision == "fp32" else f"{self.name} {self.precision}"

    def skip_reason(self, device: torch.device) -> str | None:
        """Why this variant cannot run (meaningfully) on `device`; None when it can."""
        if not native_precision(device, precision_dtype(self.precision)):
            return (f"{self.label}: this {device.type} has no native {self.precision} convolutions "
                    "(emulated, it would measure the emulation)")
        return None


EAGER = Variant("eager", shipped=False, compiled=False)
LYRA = Variant("lyra", shipped=True, compiled=False)
COMPILE = Variant("compile", shipped=True, compiled=True)
REFERENCE_COMPILED = Variant("reference_compiled", shipped=False, compiled=True)

MODEL_VARIANTS = (EAGER, LYRA, COMPILE, REFERENCE_COMPILED)   # blocks, the model, training
OP_VARIANTS = (EAGER, LYRA, COMPILE)                          # the Snake op on its own
CODEC_VARIANTS = (EAGER, LYRA, COMPILE, REFERENCE_COMPILED,
                  dataclasses.replace(COMPILE, precision="bf16"),
                  dataclasses.replace(REFERENCE_COMPILED, precision="bf16"))
ORDER = {v.label: i for i, v in enumerate(CODEC_VARIANTS)}  # eager first: the others divide by it


def require(variant: Variant, device: torch.device) -> None:
    """Skip the calling benchmark, with the reason, when `variant` cannot run on `device`."""
    reason = variant.skip_reason(device)
    if reason:
        pytest.skip(reason)


def fresh_compile_state() -> None:
    """Forget earlier compiled graphs, so one benchmark's compilation never shapes another's
    (automatic dynamic shapes are decided per code name); the suite runs with dynamo's
    recompile-limit fallback turned into an error (see `conftest.py`)."""
    torch._dynamo.reset()


def build_vae(config: ModelConfig, variant: Variant, device: torch.device, seed: int = 0) -> VAE:
    """The model for training benchmarks: built as `variant` says; same weights per seed."""
    fresh_compile_state()
    torch.manual_seed(seed)
    if variant.shipped:
        return build_model(config, compile=variant.compiled).to(device)
    model = build_model(dataclasses.replace(config, activation=REFERENCE_ACTIVATION)).to(device)
    if variant.compiled:
        compile_whole(model)
    return model


def build_codec(config: ModelConfig, variant: Variant, device: torch.device, seed: int = 0) -> VAE:
    """The model for inference benchmarks: the shipped variants exactly as `lyra encode/decode`
    prepares them (`prepare_model`, with `--compile` and `--precision`); same weights per seed."""
    fresh_compile_state()
    torch.manual_seed(seed)
    if variant.shipped:
        return prepare_model(build_model(config), device=device, precision=variant.precision,
                             compile=variant.compiled)
    model = build_model(dataclasses.replace(config, activation=REFERENCE_ACTIVATION))
    model = model.to(device=device, dtype=precision_dtype(variant.precision)).eval().requires_grad_(False)
    if variant.compiled:
        compile_whole(model, dynamic=True)
    return model


def compile_whole(model: VAE, **options) -> VAE:
    """The reference: one `torch.compile` of the encoder and one of the decoder."""
    model.encoder.compile(**options)
    model.decoder.compile(**options)
    return model
