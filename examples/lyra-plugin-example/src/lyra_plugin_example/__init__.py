"""An example Lyra plugin: an anti-aliased Snake activation backed by its own custom op, and a
depthwise (ConvNeXt-style) residual unit. Name them in a config:

    [model]
    activation = "aa_snake"
    residual_unit = "dw_residual_unit"
"""

from __future__ import annotations

from lyra_plugin_example.blocks import AntiAliasedSnake, DepthwiseResidualUnit

__all__ = ["AntiAliasedSnake", "DepthwiseResidualUnit", "register"]
__version__ = "0.1.0"


def register(registry) -> None:
    """The entry point: Lyra calls this once, the first time a config names a component it
    does not know. Everything registered here is attributed to this package.

    ``compile_safe=True`` (the default, spelled out here) says `torch.compile` may trace the
    component: its custom op has a fake kernel and an autograd formula (see `ops.py`). A
    component that cannot be traced registers with ``compile_safe=False`` and Lyra leaves
    the stages containing it eager.

    ``streamable=True`` says the component mixes time only through the ``nn.Conv1d`` layers
    it holds (the anti-aliasing filters are `Conv1d` modules; zero-stuffing is a fixed 2x
    resampling), so `lyra encode/decode --stream` can size its overlap from them. Without
    it, streaming refuses a model holding the component.
    """
    registry.register("activation", "aa_snake", AntiAliasedSnake, compile_safe=True, streamable=True)
    registry.register("residual_unit", "dw_residual_unit", DepthwiseResidualUnit, compile_safe=True,
                      streamable=True)
