"""The `lyra` command line. Each command group lives in its own module with a `register(app)`.

How commands end (exit statuses, the one-line error, ``LYRA_DEBUG=1``, signals, a closed
stdout) is `lyra.cli.exits`; the app class that applies it to every command is `lyra.cli.app`.
Usage errors print typer's usage message and exit with status 2; `lyra` alone prints the help
and exits with 2 as well (no command is a usage error). ``-h`` is ``--help``.

May import: every other part of Lyra; the command modules import torch only inside the commands
that need it, so ``lyra --help`` starts without it. Nothing imports the command line. See
docs/architecture.md.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lyra.cli.app import LyraTyper
from lyra.cli.exits import failed_outside_command, failing_stdout

app = LyraTyper(
    name="lyra",
    help="Lyra: train and run a VAE neural audio codec (44.1 kHz stereo <-> 64-channel latent at ~21.5 Hz).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from lyra.core.version import version

        typer.echo(f"lyra {version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", help="Print Lyra's version and exit.",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    """Lyra: train and run a VAE neural audio codec (44.1 kHz stereo <-> 64-channel latent at ~21.5 Hz)."""


# Command modules, each adding its commands to `app`.
from lyra.cli import codec as _codec  # noqa: E402
from lyra.cli import demo as _demo  # noqa: E402
from lyra.cli import eval as _eval  # noqa: E402
from lyra.cli import imports as _imports  # noqa: E402
from lyra.cli import model as _model  # noqa: E402
from lyra.cli import plot as _plot  # noqa: E402
from lyra.cli import plugins as _plugins  # noqa: E402
from lyra.cli import stats as _stats  # noqa: E402
from lyra.cli import train as _train  # noqa: E402

for _module in (_model, _codec, _stats, _eval, _imports, _plugins, _train, _demo, _plot):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app; the exit status (see `lyra.cli.exits`)."""
    failing_stdout()                      # started with stdout closed: printing fails, not vanishes
    try:
        app(args=argv, prog_name="lyra")
    except SystemExit as exc:             # typer ends every run so, with the status
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(f"lyra: error: {exc.code}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - outside any command: typer itself failed
        return failed_outside_command(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
