"""`lyra stats IN`: the per-channel mean and standard deviation of pre-encoded latents,
recomputed from the `.lyra` files (`lyra.codec.statistics`), e.g. for a folder encoded before
pre-encoding wrote them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def stats(
    inp: Annotated[Path, typer.Argument(metavar="IN", help="A manifest (`lyra encode --manifest`) or a folder of .lyra files.")],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Where to write the statistics (JSON); - for stdout. Default: beside a manifest (latents.jsonl -> latents.stats.json, replaced); stdout for a folder.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Compute the latents' per-channel mean and std (and over all channels) from .lyra files,
    exactly as `lyra encode DIR OUT --manifest M` writes them beside M: every file read in
    full (each CRC checked), in float64, merged in the order of the files' paths. Files of
    integer codes (a discrete bottleneck) are refused.

    \b
    Examples:  lyra stats latents.jsonl                (writes latents.stats.json)
               lyra stats latents/ -o latents.stats.json
               lyra stats latents/ > stats.json
    """
    from lyra.codec.batching import posterior_of
    from lyra.codec.statistics import lyra_files, stats_of_files

    files, default = lyra_files(inp)
    result = stats_of_files(files, posterior=posterior_of(files))
    target = output if output is not None else (str(default) if default is not None else "-")
    result.write(target)
    if not quiet:
        low, high = min(result.std), max(result.std)
        where = "" if target == "-" else f" written to {target}"
        typer.echo(f"statistics of {result.files} files ({result.frames} frames, {result.latent_dim} channels){where}: "
                   f"std {low:.4g} to {high:.4g}, all channels {result.global_mean:.4g} +- {result.global_std:.4g}",
                   err=True)


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
