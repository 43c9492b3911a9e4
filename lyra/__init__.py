"""Lyra: a VAE neural audio codec toolkit.

Importing `lyra` has no side effects: it loads no plugins, compiles nothing, touches no
device and reads no files.

    import lyra
    model = lyra.build_model()                 # the default 255,858,050-parameter model
    mean, logvar = model.encode(x)             # [B, 2, T] -> 2 x [B, 64, ceil(T/2048)]
    audio = model.decode(model.sample(mean, logvar), T)
"""

from lyra import registry
from lyra.config import ModelConfig
from lyra.errors import LyraError
from lyra.model import VAE, build_model
from lyra.snake import snake

__all__ = ["LyraError", "ModelConfig", "VAE", "build_model", "registry", "snake"]
__version__ = "0.1.0"
