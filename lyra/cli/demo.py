"""`lyra demo`: the main job end to end on a CPU in a few minutes (see `lyra.train.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the generated data, the run and the held-out audio.")] = Path("demo-out"),
    steps: Annotated[Optional[int], typer.Option(help="Training steps (default: the demo config's).", min=1)] = None,
) -> None:
    """Synthesise a small data set, train the small model on the CPU, and show it learned.

    Prints SI-SDR and mel distance of a held-out clip's reconstruction before and after training.
    """
    from lyra.train.demo import run_demo

    run_demo(out, steps=steps)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
