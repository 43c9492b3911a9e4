"""`lyra demo`: the main job end to end on a CPU in a few minutes (see `lyra.apps.demo`).

The demo fills its --out folder (data, run, held-out clips) and replaces what an earlier demo
left there. A folder it did not make (no `MARKER` file in it) is not touched without --force.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lyra.core.errors import LyraError

MARKER = ".lyra-demo"   # written into the folder: this folder is the demo's to replace


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the generated data, the run and the held-out audio.")] = Path("demo-out"),
    steps: Annotated[Optional[int], typer.Option(help="Training steps (default: the demo config's).", min=1)] = None,
    force: Annotated[bool, typer.Option("--force", help="Use --out even if it holds files an earlier demo did not write.")] = False,
    bottleneck: Annotated[str, typer.Option("--bottleneck", help="The model's bottleneck: vae (float latents), fsq or rvq (integer codes; configs/demo-fsq.toml, configs/demo-rvq.toml). A discrete one trains into OUT/run-fsq or OUT/run-rvq and also prints its bitrate.")] = "vae",
) -> None:
    """Synthesise a small data set, train the small model on the CPU, and show it learned.

    Prints SI-SDR and mel distance of a held-out clip's reconstruction before and after training
    (and, with --bottleneck fsq or rvq, the codes' bitrate; an rvq model is also scored with
    fewer quantisers).
    """
    from lyra.apps.demo import check_bottleneck, run_demo

    check_bottleneck(bottleneck)           # before the folder is touched
    _claim(out, force)
    run_demo(out, steps=steps, bottleneck=bottleneck)


def _claim(out: Path, force: bool) -> None:
    """Make `out` the demo's folder, refusing one that holds someone else's files."""
    if out.exists() and not out.is_dir():
        raise LyraError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise LyraError(f"--out {out}: already exists and was not made by `lyra demo` (no {MARKER} file "
                        "in it); pass --force to write the demo into it anyway")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `lyra demo`, which replaces this folder's contents when run again\n")


def register(app: typer.Typer) -> None:
    app.command("demo", graceful_signals=True)(demo)
