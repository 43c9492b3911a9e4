"""Model commands: `lyra model-info`, `lyra init-checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.errors import LyraError


def _config(config_path: Optional[Path], small: bool):
    from lyra.config import ModelConfig

    if config_path is not None and small:
        raise LyraError("--small and a config file are mutually exclusive")
    if config_path is not None:
        return ModelConfig.from_toml(config_path)
    return ModelConfig.small() if small else ModelConfig()


def model_info(
    config: Annotated[Optional[Path], typer.Argument(metavar="CONFIG", help="TOML file with a [model] table (default: the built-in default model).")] = None,
    small: Annotated[bool, typer.Option("--small", help="Describe the small test/demo model instead.")] = False,
) -> None:
    """Print a model's parameter count, hop, frame rate and per-stage shapes."""
    from lyra.model import build_model

    cfg = _config(config, small)
    model = build_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"parameters: {n:,}")
    typer.echo(f"hop: {cfg.hop_length} samples  frame rate: {cfg.frame_rate:.2f} Hz  latent: {cfg.latent_dim} channels")
    widths = [cfg.base_channels * m for m in (1, *cfg.c_mults)]
    t = cfg.hop_length
    for i, s in enumerate(cfg.strides):
        typer.echo(f"  encoder block {i}: [B, {widths[i]}, {t}] -> [B, {widths[i + 1]}, {t // s}]")
        t //= s


def init_checkpoint(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Where to write the checkpoint.")],
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with a [model] table.")] = None,
    small: Annotated[bool, typer.Option("--small", help="Use the small demo model.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed for the initial weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write a checkpoint with randomly initialised weights (to try the codec before training)."""
    import torch

    from lyra.atomic import refuse_to_replace
    from lyra.checkpoint import save_checkpoint
    from lyra.model import build_model

    if not force:
        refuse_to_replace(out)
    cfg = _config(config, small)
    torch.manual_seed(seed)
    save_checkpoint(out, build_model(cfg))
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("model-info")(model_info)
    app.command("init-checkpoint")(init_checkpoint)
