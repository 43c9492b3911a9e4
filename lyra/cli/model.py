"""Model commands: `lyra model-info`, `lyra init-checkpoint`, `lyra export`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.core.errors import LyraError


def _config(config_path: Optional[Path], small: bool):
    from lyra.model.config import ModelConfig

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
    from lyra.model.vae import build_model

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

    from lyra.core.atomic import refuse_to_replace
    from lyra.model.checkpoint import save_checkpoint
    from lyra.model.vae import build_model

    if not force:
        refuse_to_replace(out)
    cfg = _config(config, small)
    torch.manual_seed(seed)
    save_checkpoint(out, build_model(cfg))
    typer.echo(f"wrote {out}")


def export(
    checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="The checkpoint (from `lyra train`, `lyra init-checkpoint` or `lyra import`).")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Where to write the model (a .safetensors file).")],
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Export the checkpoint's EMA weights when it has them (the default); --no-ema: its raw trained weights.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    latent_stats: Annotated[Optional[Path], typer.Option("--latent-stats", help="Also carry these latent statistics (from pre-encoding or `lyra stats`, of this model's latents): `lyra.Codec.load` gives them back as codec.stats.")] = None,
) -> None:
    """Write a checkpoint's model as a weights-only safetensors file.

    The file holds the weights (the EMA weights when the checkpoint has them) and, in its
    metadata, the model config and fingerprint: `lyra encode/decode/eval` and `lyra train
    --init-from` take it in place of the checkpoint, and latents written with either decode
    with the other. It has no training state (`--resume` needs the checkpoint).

    Example:

        lyra export run/best.pt model.safetensors
    """
    from lyra.core.atomic import refuse_to_replace
    from lyra.model.export import export_model
    from lyra.model.export_format import read_header

    if str(out) == "-":
        raise LyraError("OUT: give a file name (an export is not written to standard output)")
    if out.exists() and checkpoint.exists() and out.samefile(checkpoint):
        raise LyraError(f"{out}: is the checkpoint being exported; give another output file")
    if not force:
        refuse_to_replace(out)
    stats = None
    if latent_stats is not None:
        from lyra.codec.statistics import LatentStats

        stats = LatentStats.read(latent_stats).to_dict()
    metadata = export_model(checkpoint, out, ema=ema, latent_stats=stats)
    header, _ = read_header(out)
    parameters = sum(math.prod(entry["shape"]) for entry in header.values())
    if metadata["weights"] == "ema":
        which = "EMA weights"
    elif ema:
        which = "trained weights (the checkpoint has no EMA weights)"
    else:
        which = "trained weights (--no-ema)"
    typer.echo(f"wrote {out}: {parameters:,} parameters, {out.stat().st_size / 1e6:.1f} MB, "
               f"model {metadata['fingerprint']}, {which}" + (", with latent statistics" if "latent_stats" in metadata else ""))


def register(app: typer.Typer) -> None:
    app.command("model-info")(model_info)
    app.command("init-checkpoint")(init_checkpoint)
    app.command("export")(export)
