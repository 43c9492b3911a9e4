"""The codec: getting a model ready for inference (`inference`), chunked streams equal to
whole-signal results (`streaming`), the `Codec` object (`codec`, its file forms: `files`) and
folder pre-encoding (`preencode`, with `mirror`, `resume`, `manifest`, `group`, and `batching`
for --batch-size and --sample), the latents' statistics (`statistics`) and reading a manifest
back (`manifest_reader`).

May import: `lyra.core`, `lyra.audio`, `lyra.registry`, `lyra.model`, `lyra.eval`; never
training or the command line. See docs/architecture.md.

`from lyra.codec import Codec` works (loaded on first use).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "Codec":
        raise AttributeError(f"module 'lyra.codec' has no attribute {name!r}")
    from lyra.codec.codec import Codec

    return Codec
