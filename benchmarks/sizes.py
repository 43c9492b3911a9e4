"""Problem sizes for the benchmark suite, chosen with ``--lyra-size {small,default,full}``.

- ``small`` (the default): the demo model (`ModelConfig.small()`); the whole suite runs in
  minutes on a 2-core CPU. Its training step is the issue's "small config": 4 x 1 s.
- ``default``: the design document's model (255,858,050 parameters) at sizes a 2-core CPU
  gets through: encode/decode of one 2 s clip, a training step of one 1 s clip, the codec on
  20 s of audio (about an hour for the whole suite).
- ``full``: the design document's model and training batch, 4 x 40960 samples, the codec on
  300 s of audio; meant for GPUs.

Block-level benchmarks run the model's first (widest-in-time) stage, where the Snake op and
the memory traffic matter most: the residual unit and encoder block at
``base_channels`` on ``[batch, base_channels, samples]``, and the last decoder block,
which maps ``[batch, base_channels * c_mults[0], samples / strides[0]]`` back to full rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lyra.model.config import ModelConfig

SIZE_OPTION = "--lyra-size"


@dataclass(frozen=True)
class Sizes:
    name: str
    model: ModelConfig
    batch: int                         # clips per encode/decode call (and block benchmarks)
    samples: int                       # clip length (a multiple of the hop)
    train_batch: int                   # clips per training step
    train_samples: int                 # training crop length (a multiple of the hop)
    snake_shape: tuple[int, int, int]  # [B, C, T] for the Snake op on its own
    snake_dtypes: tuple[torch.dtype, ...]
    codec_seconds: float               # audio per codec call (whole file, or streamed)
    rounds: int                        # timed rounds for a model-level benchmark
    fast_rounds: int                   # timed rounds for the Snake op and single blocks
    codec_rounds: int                  # timed rounds for a codec call

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio in one batch of clips."""
        return self.batch * self.samples / self.model.sample_rate

    @property
    def train_seconds(self) -> float:
        """Seconds of audio in one training batch."""
        return self.train_batch * self.train_samples / self.model.sample_rate

    @property
    def first_stage(self) -> tuple[int, int, int]:
        """(channels in, channels out, stride) of the first encoder block."""
        cfg = self.model
        return cfg.base_channels, cfg.base_channels * cfg.c_mults[0], cfg.strides[0]


def sizes_from_config(config) -> Sizes:
    """The sizes chosen on the command line (a `pytest.Config`)."""
    return sizes(config.getoption(SIZE_OPTION))


SECOND = 22 * 2048  # 45,056 samples: about one second at 44.1 kHz, a whole number of hops


def sizes(name: str) -> Sizes:
    if name == "small":
        return Sizes(
            name="small", model=ModelConfig.small(), batch=1, samples=32 * 2048,
            train_batch=4, train_samples=SECOND,
            snake_shape=(2, 64, 32768), snake_dtypes=(torch.float32,),
            codec_seconds=30.0, rounds=10, fast_rounds=30, codec_rounds=3,
        )
    if name == "default":
        return Sizes(
            name="default", model=ModelConfig(), batch=1, samples=2 * SECOND,
            train_batch=1, train_samples=SECOND,
            snake_shape=(1, 128, 2 * SECOND), snake_dtypes=(torch.float32,),
            codec_seconds=20.0, rounds=3, fast_rounds=10, codec_rounds=2,
        )
    if name == "full":
        return Sizes(
            name="full", model=ModelConfig(), batch=4, samples=40960,
            train_batch=4, train_samples=40960,
            snake_shape=(4, 128, 40960), snake_dtypes=(torch.bfloat16, torch.float32),
            codec_seconds=300.0, rounds=10, fast_rounds=50, codec_rounds=3,
        )
    raise ValueError(f"--lyra-size: expected 'small', 'default' or 'full', got {name!r}")
