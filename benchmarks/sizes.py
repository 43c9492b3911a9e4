"""Problem sizes for the benchmark suite, chosen with ``--lyra-size {small,full}``.

- ``small`` (default): the demo model (`ModelConfig.small()`), batch 1, 1.5 s clips: the
  whole suite runs in a few minutes on a 2-core CPU.
- ``full``: the design document's model (255,858,050 parameters) and training batch,
  4 x 40960 samples; meant for GPU runs.

Block-level benchmarks run the model's first (widest-in-time) stage, where the Snake op and
the memory traffic matter most: the residual unit and encoder block at
``base_channels`` on ``[batch, base_channels, samples]``, and the last decoder block,
which maps ``[batch, base_channels * c_mults[0], samples / strides[0]]`` back to full rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lyra.config import ModelConfig

SIZE_OPTION = "--lyra-size"


@dataclass(frozen=True)
class Sizes:
    name: str
    model: ModelConfig
    batch: int
    samples: int                       # clip length (a multiple of the hop)
    snake_shape: tuple[int, int, int]  # [B, C, T] for the Snake op on its own
    snake_dtypes: tuple[torch.dtype, ...]
    stream_seconds: float              # length of the streaming codec's long input
    rounds: int                        # timed rounds for a model-level benchmark
    fast_rounds: int                   # timed rounds for the Snake op and single blocks

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio in one batch of clips."""
        return self.batch * self.samples / self.model.sample_rate

    @property
    def first_stage(self) -> tuple[int, int, int]:
        """(channels in, channels out, stride) of the first encoder block."""
        cfg = self.model
        return cfg.base_channels, cfg.base_channels * cfg.c_mults[0], cfg.strides[0]


def sizes_from_config(config) -> Sizes:
    """The sizes chosen on the command line (a `pytest.Config`)."""
    return sizes(config.getoption(SIZE_OPTION))


def sizes(name: str) -> Sizes:
    if name == "small":
        return Sizes(
            name="small", model=ModelConfig.small(), batch=1, samples=32 * 2048,
            snake_shape=(2, 64, 32768), snake_dtypes=(torch.float32,),
            stream_seconds=30.0, rounds=10, fast_rounds=30,
        )
    if name == "full":
        return Sizes(
            name="full", model=ModelConfig(), batch=4, samples=40960,
            snake_shape=(4, 128, 40960), snake_dtypes=(torch.bfloat16, torch.float32),
            stream_seconds=300.0, rounds=10, fast_rounds=50,
        )
    raise ValueError(f"--lyra-size: expected 'small' or 'full', got {name!r}")
