"""Training commands: `lyra train cfg.toml`, `lyra config init`, `lyra config show`.

`lyra train` runs the same way alone or under torchrun:

    lyra train cfg.toml                                   # one process (CPU or one GPU)
    torchrun --nproc_per_node=4 -m lyra train cfg.toml    # four GPUs, DistributedDataParallel
    lyra train cfg.toml --resume                          # continue run_dir/latest.pt exactly
    lyra train cfg.toml --set optim.lr=3e-4 --set data.batch_size=8
    lyra train cfg.toml --init-from sao_vae.pt --freeze-encoder   # fine-tune the decoder of a pretrained VAE
    lyra train cfg.toml --quiet                           # nothing but errors (logging.progress = "off")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.cli.app import LyraTyper
from lyra.core.errors import LyraError

SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable).")]


InitFromOption = Annotated[Optional[Path], typer.Option(
    "--init-from", metavar="CKPT",
    help="Start a new run from this checkpoint's weights (a model checkpoint, e.g. an imported one, a `lyra export` file, or another "
         "run's latest.pt/best.pt, of which only the weights are taken). The config's [model] must describe "
         "its model; a config without a [model] table takes the checkpoint's.")]


def _load_config(path: Path, overrides: list[str] | None):
    """The run config from `path` with `--set` overrides applied, validated as one, and whether
    the config has a [model] table (else it holds the default)."""
    from lyra.core.toml import read_toml
    from lyra.train.config import TrainConfig, apply_overrides

    data = apply_overrides(read_toml(path), overrides or [])
    try:
        return TrainConfig.from_mapping(data, ""), "model" in data
    except LyraError as exc:
        raise LyraError(f"{path}: {exc}") from None


def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The run's TOML config (`lyra config init` writes one).")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in run_dir from latest.pt.")] = False,
    init_from: InitFromOption = None,
    freeze_encoder: Annotated[bool, typer.Option(
        "--freeze-encoder", help="Train the decoder only: the encoder's weights, and so the latent space, stay "
                                 "as they are (for use with --init-from).")] = False,
    overrides: SetOption = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print nothing but errors and warnings: no start line, progress or validation "
                              "lines (as logging.progress = \"off\"; metrics.jsonl is still written).")] = False,
) -> None:
    """Train the codec on a folder of audio, as the config describes.

    On a terminal, a progress bar shows the step, the losses, the KL weight, the learning rate,
    the throughput and the time left; elsewhere (a log file, CI) a plain line every
    logging.log_every steps.

    Ctrl-C (SIGINT) or SIGTERM finishes the current step (with optim.grad_accum > 1, the
    current micro-batch, dropping the unfinished step), saves a checkpoint and exits;
    `--resume` continues from it exactly. A run started with --init-from or --freeze-encoder
    keeps both: `--resume` alone continues it.
    """
    from lyra.train.engine import train as run_training
    from lyra.train.run_setup import check_start

    check_start(resume, init_from)   # before reading anything
    cfg, model_in_config = _load_config(config, overrides)
    if quiet:
        cfg = dataclasses.replace(cfg, logging=dataclasses.replace(cfg.logging, progress="off"))
    result = run_training(cfg, resume=resume, init_from=init_from, freeze_encoder=freeze_encoder,
                          model_in_config=model_in_config)
    if result.interrupted is not None:
        # 128 + the signal, as `lyra.cli.exits` documents (the engine already said what it saved)
        raise SystemExit(128 + result.interrupted if result.interrupted > 0 else 1)


def config_init(
    out: Annotated[str, typer.Argument(metavar="OUT", help="Where to write the config ('-': standard output).")] = "-",
    small: Annotated[bool, typer.Option("--small", help="Start from the small demo model.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write a commented starting config with every default (the design document's)."""
    from lyra.core.atomic import atomic_write, refuse_to_replace
    from lyra.model.config import ModelConfig
    from lyra.train.config import TrainConfig, commented_toml

    cfg = TrainConfig(model=ModelConfig.small()) if small else TrainConfig()
    text = commented_toml(cfg)
    if not force:
        refuse_to_replace(out)
    with atomic_write(out) as f:
        f.write(text.encode())
    if out != "-":
        typer.echo(f"wrote {out}", err=True)


def config_show(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The run's TOML config.")],
    overrides: SetOption = None,
    init_from: InitFromOption = None,
) -> None:
    """Print the fully resolved config (defaults filled in, overrides applied) as TOML.

    With --init-from, as `lyra train --init-from` resolves it: a config without a [model]
    table shows the checkpoint's model.
    """
    from lyra.core.toml import dumps

    cfg, model_in_config = _load_config(config, overrides)
    if init_from is not None:
        from lyra.model.checkpoint import read_checkpoint
        from lyra.model.stored_model import config_from_state
        from lyra.train.config import with_checkpoint_model

        state = read_checkpoint(init_from)
        model = config_from_state(state, str(init_from))
        cfg = with_checkpoint_model(cfg, model_in_config, model, str(init_from))
    from lyra.model.build_checks import check_components

    try:   # the components it names exist and take the options it gives them
        check_components(cfg.model)
    except LyraError as exc:
        raise LyraError(f"{config if model_in_config or init_from is None else init_from}: {exc}") from None
    typer.echo(dumps(cfg.to_dict()), nl=False)


def register(app: typer.Typer) -> None:
    app.command("train", graceful_signals=True)(train)
    group = LyraTyper(help="Write or inspect training configs.", no_args_is_help=True)
    group.command("init")(config_init)
    group.command("show")(config_show)
    app.add_typer(group, name="config")
