"""Import commands: `lyra import stable-audio-tools SRC OUT.pt`, `lyra import descript-audio-codec SRC OUT.pt`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.cli.app import LyraTyper


def stable_audio_tools(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="stable-audio-tools weights: Stable Audio Open's model.safetensors / model.ckpt, an autoencoder training .ckpt, or an unwrapped autoencoder.")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The Lyra checkpoint to write (.pt).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="The model_config.json that goes with SRC (checked against the weights; says whether the decoder ends in tanh).")] = None,
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="Where the VAE's keys start in SRC (default: the first of 'pretransform.model.', 'autoencoder.', '' that holds one).")] = None,
    final_tanh: Annotated[Optional[bool], typer.Option("--final-tanh/--no-final-tanh", help="Whether the decoder ends in tanh (default: from --config; Stable Audio Open 1.0 has none).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Convert stable-audio-tools' Oobleck VAE (Stable Audio Open's autoencoder) into a Lyra
    checkpoint that `lyra encode/decode/eval -c` and `lyra train --init-from` take.

    Weight norm is folded into plain weights; every key must map, or nothing is written.
    Nothing is downloaded: SRC is a file you have.

    \b
    Example:  lyra import stable-audio-tools stable-audio-open-1.0/model.safetensors sao-vae.pt
    """
    from lyra.core.atomic import refuse_to_replace
    from lyra.model.checkpoint import model_fingerprint, save_checkpoint
    from lyra.model.importers.stable_audio_tools import import_vae
    from lyra.model.vae import build_model

    if not force:
        refuse_to_replace(out)
    found = import_vae(src, config, prefix=prefix, final_tanh=final_tanh)
    model = build_model(found.config)
    model.load_state_dict(found.weights)
    save_checkpoint(out, model)
    n = sum(p.numel() for p in model.parameters())
    cfg = found.config
    typer.echo(f"wrote {out}: Oobleck VAE from {src} (keys under '{found.prefix}'), {n:,} parameters, "
               f"{found.folded} weight-normed convolutions folded; {cfg.channels} channels at "
               f"{cfg.sample_rate} Hz, hop {cfg.hop_length}, {cfg.latent_dim}-channel latent, "
               f"final tanh {'on' if cfg.final_tanh else 'off'}; model {model_fingerprint(model)}")


def descript_audio_codec(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="descript-audio-codec weights: the .pth that `dac download` fetches or DAC.save(path, package=False) writes (a bare state dict or .safetensors with --sample-rate).")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The Lyra checkpoint to write (.pt).")],
    sample_rate: Annotated[Optional[int], typer.Option("--sample-rate", help="The model's sample rate, for files without DAC's metadata (checked against it otherwise).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Convert a descript-audio-codec (DAC 1.0.0) model into a Lyra checkpoint with the rvq
    bottleneck, that `lyra encode/decode/eval -c` and `lyra train --init-from` take.

    Weight norm is folded into plain weights; every key must map, or nothing is written.
    Nothing is downloaded: SRC is a file you have.

    \b
    Example:  lyra import descript-audio-codec weights_44khz_8kbps_0.0.1.pth dac-44khz.pt
    """
    from lyra.core.atomic import refuse_to_replace
    from lyra.model.checkpoint import model_fingerprint, save_checkpoint
    from lyra.model.importers.descript_audio_codec import bitrate, import_dac
    from lyra.model.vae import build_model

    if not force:
        refuse_to_replace(out)
    found = import_dac(src, sample_rate=sample_rate)
    model = build_model(found.config)
    model.load_state_dict(found.weights)
    save_checkpoint(out, model)
    n = sum(p.numel() for p in model.parameters())
    cfg, rvq = found.config, found.config.options["rvq"]
    snake = ("Lyra's snake (every alpha > 0)" if cfg.activation == "snake" else
             f"dac_snake ({found.nonpositive_alphas} Snake alphas <= 0, which Lyra's snake cannot express)")
    typer.echo(f"wrote {out}: descript-audio-codec model from {src}, {n:,} parameters, {found.folded} "
               f"weight-normed convolutions folded; {cfg.channels} channel(s) at {cfg.sample_rate} Hz, hop "
               f"{cfg.hop_length}, {rvq['num_quantizers']} codebooks of {rvq['codebook_size']} "
               f"({bitrate(cfg) / 1000:.2f} kbit/s); activations: {snake}; model {model_fingerprint(model)}")


def register(app: typer.Typer) -> None:
    group = LyraTyper(help="Import trained models from other toolkits.", no_args_is_help=True)
    group.command("stable-audio-tools")(stable_audio_tools)
    group.command("descript-audio-codec")(descript_audio_codec)
    app.add_typer(group, name="import")
