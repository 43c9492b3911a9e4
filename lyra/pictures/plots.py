"""Figures drawn with matplotlib (the ``plot`` extra): validation spectrograms and training curves.

matplotlib is imported inside the functions, so importing this module costs nothing; call
them only where it is installed (`lyra.core.extras`). Figures are built on
`matplotlib.figure.Figure` with the Agg canvas directly, never through pyplot: no backend is
selected, no global state is changed, nothing is left open.

    spectrogram_figure(original, reconstruction, sample_rate, title)   side by side, Hz / s / dBFS
    metrics_figure(records, title)      metrics.jsonl's records against steps (`lyra plot`)
    render(figure) -> [H, W, 3] uint8   the figure's pixels (written with `lyra.pictures.png`)
    write_metrics_plot(metrics.jsonl, out.png, title)    the two above, to a file
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lyra.pictures.mel import RANGE_DB, Spectrogram, hz_to_mel, mel_spectrogram

DPI = 100
FREQUENCY_TICKS = (100, 200, 500, 1000, 2000, 5000, 10000, 20000)   # Hz, those below Nyquist

# metrics.jsonl keys drawn, panel by panel: (title, split, keys, log scale).
TRAIN_LOSSES = ("loss", "sc", "log_mag", "waveform", "kl", "mel", "adversarial", "feature_matching")
VAL_DISTANCES = ("loss", "mel_distance", "stft_distance")
DISCRIMINATOR = ("d_loss",)
# Values (and steps) beyond this magnitude are not drawn, like NaN and infinity: a gap in the
# line, counted in its label ("loss (2 not drawn)"). Matplotlib's axis arithmetic overflows on
# values near the float range (1e308), and an integer of 400 digits is no float at all.
PLOTTABLE = 1e100


def render(figure) -> np.ndarray:
    """Draw `figure` (a matplotlib Figure) on an Agg canvas: its [H, W, 3] uint8 pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def hz_label(hz: float) -> str:
    """1000 -> '1k', 500 -> '500', 2500 -> '2.5k'."""
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


def spectrogram_figure(original: torch.Tensor, reconstruction: torch.Tensor, sample_rate: int, title: str = ""):
    """Original and reconstruction side by side: frequency in Hz on a mel scale, time in
    seconds, one colour bar in dBFS (80 dB down from the top of the original's level)."""
    from matplotlib.figure import Figure

    specs = [mel_spectrogram(a, sample_rate) for a in (original, reconstruction)]
    top = math.ceil(float(specs[0].db.max()) / 10) * 10     # the colour range, from the original
    figure = Figure(figsize=(12, 4.2), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, spec, name in zip(axes, specs, ("original", "reconstruction")):
        image = _show(ax, spec, top, sample_rate)
        ax.set_title(name)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (Hz, mel scale)")
    bar = figure.colorbar(image, ax=list(axes), pad=0.01)
    bar.set_label("level (dBFS)")
    if title:
        figure.suptitle(title)
    return figure


def _show(ax, spec: Spectrogram, top: float, sample_rate: int):
    image = ax.imshow(spec.db, origin="lower", aspect="auto", cmap="magma", vmin=top - RANGE_DB, vmax=top,
                      extent=(0.0, spec.seconds, 0.0, spec.top_mel), interpolation="nearest")
    ticks = [hz for hz in FREQUENCY_TICKS if hz <= sample_rate / 2]
    ax.set_yticks([float(hz_to_mel(hz)) for hz in ticks], [hz_label(hz) for hz in ticks])
    return image


def metrics_figure(records: list[dict[str, Any]], title: str = ""):
    """metrics.jsonl's training and validation records against steps: losses, KL weight and
    learning rate, validation SI-SDR and distances, discriminator loss (adversarial runs)."""
    from matplotlib.figure import Figure

    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    panels = [
        ("training losses", train, TRAIN_LOSSES, True),
        ("KL weight and learning rate", train, ("kl_weight", "lr"), False),
        ("validation SI-SDR (dB)", val, ("si_sdr",), False),
        ("validation loss and distances", val, VAL_DISTANCES, True),
        ("discriminator loss", train, DISCRIMINATOR, False),
    ]
    panels = [p for p in panels if any(_series(p[1], key)[0] for key in p[2])]
    columns = 2 if len(panels) > 1 else 1
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(6 * columns, 3.2 * rows + 0.4), dpi=DPI, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for ax, (name, split, keys, log) in zip(grid.flat, panels):
        if keys == ("kl_weight", "lr"):
            _weights_panel(ax, split)
        else:
            for key in keys:
                steps, values = _series(split, key)
                if steps and any(v != 0 for v in values):
                    ax.plot(steps, values, label=_label(key, values), marker="o" if len(steps) < 20 else None,
                            markersize=3)
            if log and _all_positive(ax):
                ax.set_yscale("log")
            if ax.lines:
                ax.legend(fontsize="small")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(grid.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return figure


def _weights_panel(ax, train: list[dict[str, Any]]) -> None:
    """KL weight on the left axis, learning rate on the right."""
    steps, kl = _series(train, "kl_weight")
    ax.plot(steps, kl, color="tab:blue", label=_label("kl_weight", kl))
    ax.set_ylabel(_label("KL weight", kl), color="tab:blue")
    right = ax.twinx()
    steps, lr = _series(train, "lr")
    right.plot(steps, lr, color="tab:orange", label=_label("lr", lr))
    right.set_ylabel(_label("learning rate", lr), color="tab:orange")


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in `records`; values not drawn (non-finite ones, stored as
    strings, and any beyond PLOTTABLE) as NaN; records whose step is beyond it left out."""
    steps, values = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, bool) or value is None or abs(r["step"]) > PLOTTABLE:
            continue
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                continue
        if isinstance(value, (int, float)):
            steps.append(int(r["step"]))
            values.append(float(value) if abs(value) <= PLOTTABLE else math.nan)   # NaN stays NaN
    return steps, values


def _label(name: str, values: list[float]) -> str:
    """`name`, with how many of `values` are not drawn (NaN: gaps in the line)."""
    gaps = sum(1 for v in values if math.isnan(v))
    return f"{name} ({gaps} not drawn)" if gaps else name


def _all_positive(ax) -> bool:
    data = [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines]
    finite = [d[np.isfinite(d)] for d in data]
    return bool(finite) and all(d.size == 0 or (d > 0).all() for d in finite) and any(d.size for d in finite)


def write_metrics_plot(records: list[dict[str, Any]], out: str | Path, title: str = "") -> None:
    """Draw a run's metrics records (`lyra.train.metrics_log.load_records` of its metrics.jsonl)
    as a PNG at `out`, atomically."""
    from lyra.pictures.png import write_png

    write_png(out, render(metrics_figure(records, title)))
