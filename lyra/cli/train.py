"""Training commands: `lyra train cfg.toml`, `lyra config init`, `lyra config show`.

`lyra train` runs the same way alone or under torchrun:

    lyra train cfg.toml                                   # one process (CPU or one GPU)
    torchrun --nproc_per_node=4 -m lyra train cfg.toml    # four GPUs, DistributedDataParallel
    lyra train cfg.toml --resume                          # continue run_dir/latest.pt exactly
    lyra train cfg.toml --set optim.lr=3e-4 --set data.batch_size=8
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.cli.app import LyraTyper
from lyra.errors import LyraError

SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable).")]


def load_config(path: Path, overrides: list[str] | None):
    """The run config from `path` with `--set` overrides applied, validated as one."""
    from lyra.config import read_toml
    from lyra.train.config import TrainConfig, apply_overrides

    data = apply_overrides(read_toml(path), overrides or [])
    try:
        return TrainConfig.from_mapping(data, "")
    except LyraError as exc:
        raise LyraError(f"{path}: {exc}") from None


def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The run's TOML config (`lyra config init` writes one).")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in run_dir from latest.pt.")] = False,
    overrides: SetOption = None,
) -> None:
    """Train the codec on a folder of audio, as the config describes.

    Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and exits;
    `--resume` continues from it exactly.
    """
    from lyra.train.engine import train as run_training

    cfg = load_config(config, overrides)
    result = run_training(cfg, resume=resume)
    if result.interrupted is not None:
        # 128 + the signal, as `lyra.cli.exits` documents (the engine already said what it saved)
        raise SystemExit(128 + result.interrupted if result.interrupted > 0 else 1)


def config_init(
    out: Annotated[str, typer.Argument(metavar="OUT", help="Where to write the config ('-': standard output).")] = "-",
    small: Annotated[bool, typer.Option("--small", help="Start from the small demo model.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write a commented starting config with every default (the design document's)."""
    from lyra.atomic import atomic_write, refuse_to_replace
    from lyra.config import ModelConfig
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
) -> None:
    """Print the fully resolved config (defaults filled in, overrides applied) as TOML."""
    from lyra.train.toml_writer import dumps

    typer.echo(dumps(load_config(config, overrides).to_dict()), nl=False)


def register(app: typer.Typer) -> None:
    app.command("train", graceful_signals=True)(train)
    group = LyraTyper(help="Write or inspect training configs.", no_args_is_help=True)
    group.command("init")(config_init)
    group.command("show")(config_show)
    app.add_typer(group, name="config")
