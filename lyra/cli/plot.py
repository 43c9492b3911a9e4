"""`lyra plot RUN_DIR`: a training run's metrics against steps, as a PNG (the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.core.errors import LyraError


def plot(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A training run's directory (the config's run_dir), holding metrics.jsonl.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the PNG (default: RUN_DIR/metrics.png, replaced).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Draw a run's metrics.jsonl as a PNG: training losses, KL weight and learning rate,
    validation SI-SDR, loss and mel/STFT distances, and the discriminator loss of adversarial
    runs, against steps. Training writes the same picture to RUN_DIR/metrics.png at each
    validation (`logging.plots`); this command draws it at any time, from a run still going or
    one that died. Needs matplotlib (the plot extra).

    \b
    Examples:  lyra plot runs/demo                   (writes runs/demo/metrics.png)
               lyra plot runs/demo -o curves.png
    """
    from lyra.core.atomic import refuse_to_replace
    from lyra.core.extras import check

    if not run_dir.is_dir():
        raise LyraError(f"{run_dir}: no such directory" if not run_dir.exists() else f"{run_dir}: not a directory")
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise LyraError(f"{run_dir}: no metrics.jsonl (not a training run directory, or the run has not started)")
    check("matplotlib", "plot", "lyra plot")
    if out is None:
        out = run_dir / "metrics.png"     # a derived picture, redrawn at will
    elif not force:
        refuse_to_replace(out)
    from lyra.pictures.plots import write_metrics_plot
    from lyra.train.metrics_log import load_records

    write_metrics_plot(load_records(metrics), out, run_dir.resolve().name)
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)
