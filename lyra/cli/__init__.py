"""The `lyra` command line. Each command group lives in its own module with a `register(app)`.

Errors a user can cause (`LyraError`) are printed as one line without a traceback, with exit
status 1; Ctrl-C exits with 130.
"""

from __future__ import annotations

import sys

import typer

from lyra.errors import LyraError

app = typer.Typer(
    name="lyra",
    help="Lyra: train and run a VAE neural audio codec (44.1 kHz stereo <-> 64-channel latent at ~21.5 Hz).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, each adding its commands to `app`.
from lyra.cli import codec as _codec  # noqa: E402
from lyra.cli import demo as _demo  # noqa: E402
from lyra.cli import model as _model  # noqa: E402
from lyra.cli import plugins as _plugins  # noqa: E402
from lyra.cli import train as _train  # noqa: E402

for _module in (_model, _codec, _plugins, _train, _demo):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, turning user errors into one-line messages."""
    try:
        # standalone_mode=False: click returns a `typer.Exit` code instead of calling sys.exit
        code = app(args=argv, standalone_mode=False)
    except LyraError as exc:
        print(f"lyra: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lyra: interrupted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            print("lyra: aborted", file=sys.stderr)
            return 130
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
