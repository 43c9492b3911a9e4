"""Validation spectrogram pictures (labelled, and the pixel-dump fallback), `lyra plot`, extras' hints."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lyra.cli import main
from lyra.core.extras import editable_source, install_hint
from lyra.pictures.spectrogram import pixel_image, spectrogram_picture

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100


def _sine(hz, start=0.0, stop=1.0, amplitude=0.5, seconds=1.0):
    t = torch.arange(int(seconds * RATE)) / RATE
    mono = amplitude * torch.sin(2 * math.pi * hz * t) * ((t >= start) & (t < stop))
    return torch.stack([mono, mono])


def _tick_pixels(ax, axis):
    """{label text: pixel position (display coordinates)} of an axis' ticks."""
    if axis == "y":
        return {t.get_text(): ax.transData.transform((0, v))[1] for v, t in zip(ax.get_yticks(), ax.get_yticklabels())}
    return {t.get_text(): ax.transData.transform((v, 0))[0] for v, t in zip(ax.get_xticks(), ax.get_xticklabels())}


def _read_label(ticks, pixel):
    """The value a reader reads at `pixel`, interpolating between the two nearest numeric labels."""
    values = {float(k.replace("\u2212", "-").replace("k", "e3")): p for k, p in ticks.items() if k}
    (v0, p0), (v1, p1) = sorted(values.items(), key=lambda kv: abs(kv[1] - pixel))[:2]
    return v0 + (v1 - v0) * (pixel - p0) / (p1 - p0)


def test_the_labelled_spectrogram_shows_a_sine_at_its_frequency_time_and_level():
    pytest.importorskip("matplotlib")
    from lyra.pictures.plots import render, spectrogram_figure

    original = _sine(1000, start=0.25, stop=0.75)           # -6 dBFS, from 0.25 s to 0.75 s
    reconstruction = _sine(5000)
    figure = spectrogram_figure(original, reconstruction, RATE, "step 1200: validation clip 0")
    pixels = render(figure).astype(float)
    height = pixels.shape[0]
    left, right, bar = figure.axes
    assert (left.get_title(), right.get_title()) == ("original", "reconstruction")
    assert figure.get_suptitle() == "step 1200: validation clip 0"
    assert "Hz" in left.get_ylabel() and "(s)" in left.get_xlabel() and "dBFS" in bar.get_ylabel()

    def brightest(ax):
        """(row, column range) of the loudest line inside an axes, in display coordinates."""
        box = ax.get_window_extent()
        rows = slice(int(height - box.y1) + 2, int(height - box.y0) - 2)
        cols = slice(int(box.x0) + 2, int(box.x1) - 2)
        light = pixels[rows, cols].sum(axis=2)              # magma: louder is lighter
        row = int(np.argmax(light.mean(axis=1)))
        lit = np.flatnonzero(light[row] > 0.5 * light[row].max()) + cols.start
        return height - (row + rows.start), lit, pixels[row + rows.start, lit[len(lit) // 2]]

    y, lit, colour = brightest(left)
    assert _read_label(_tick_pixels(left, "y"), y) == pytest.approx(1000, rel=0.04)
    x_ticks = _tick_pixels(left, "x")
    assert _read_label(x_ticks, lit[0]) == pytest.approx(0.25, abs=0.03)
    assert _read_label(x_ticks, lit[-1]) == pytest.approx(0.75, abs=0.03)
    y, lit, _ = brightest(right)                           # the panels share the left one's labels
    assert _read_label(_tick_pixels(left, "y"), y) == pytest.approx(5000, rel=0.04)
    x_ticks = _tick_pixels(right, "x")
    assert _read_label(x_ticks, lit[0]) < 0.05 and _read_label(x_ticks, lit[-1]) > 0.95

    # The colour bar: the sine's colour sits at about -6 dBFS on it (Hann scalloping: < 1.5 dB).
    box = bar.get_window_extent()
    column = pixels[int(height - box.y1) + 1:int(height - box.y0) - 1, int((box.x0 + box.x1) / 2)]
    row = int(np.argmin(np.abs(column - colour).sum(axis=1))) + int(height - box.y1) + 1
    assert _read_label(_tick_pixels(bar, "y"), height - row) == pytest.approx(-6.5, abs=2.5)


def test_without_matplotlib_the_picture_is_the_pixel_dump(monkeypatch):
    original, reconstruction = _sine(1000, seconds=0.1), _sine(3000, seconds=0.1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # as if not installed
    picture = spectrogram_picture(original, reconstruction, RATE, "step 1")
    np.testing.assert_array_equal(picture, pixel_image(original, reconstruction))
    assert picture.shape == (2 * 256 + 3, 4410 // 16 + 1, 3)
    # The pixel dump's rows are linear in frequency, low at the bottom: 1 kHz in the top half
    # (the original) at row 255 - 1000 / (44100 / 512).
    top = picture[:256].astype(int).sum(axis=2).mean(axis=1)
    assert abs(int(np.argmax(top)) - (255 - round(1000 / (RATE / 512)))) <= 1


def _metrics(path, adversarial=False):
    lines = []
    for step in range(1, 41):
        train = {"split": "train", "step": step, "loss": 5 / step, "sc": 1 / step, "log_mag": 4 / step, "waveform": 0.0,
                 "kl": 0.1 * step, "kl_weight": min(step, 10) * 1e-5, "lr": 1e-3, "skipped": False}
        if adversarial:
            train.update(d_loss=2.0 + 0.01 * step, adversarial=0.5, feature_matching=3.0)
        lines.append(train)
        if step % 10 == 0:
            lines.append({"split": "val", "step": step, "loss": 4 / step, "si_sdr": float(step) if step != 20 else "nan",
                          "mel_distance": 3 / step, "stft_distance": 4 / step, "best": True})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_metrics_figure_draws_each_series_in_its_panel(tmp_path):
    pytest.importorskip("matplotlib")
    from lyra.pictures.plots import metrics_figure
    from lyra.train.metrics_log import load_records

    _metrics(tmp_path / "m.jsonl")
    figure = metrics_figure(load_records(tmp_path / "m.jsonl"))
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible() and ax.get_title()}
    assert set(panels) == {"training losses", "KL weight and learning rate", "validation SI-SDR (dB)",
                           "validation loss and distances"}                    # no discriminator panel
    losses = {line.get_label(): line for line in panels["training losses"].lines}
    assert set(losses) == {"loss", "sc", "log_mag", "kl"}                      # waveform is all zero
    np.testing.assert_allclose(losses["loss"].get_ydata(), [5 / s for s in range(1, 41)])
    (si_sdr,) = panels["validation SI-SDR (dB)"].lines
    assert list(si_sdr.get_xdata()) == [10, 20, 30, 40]
    np.testing.assert_array_equal(si_sdr.get_ydata(), [10, np.nan, 30, 40])      # "nan" stays a gap
    _metrics(tmp_path / "a.jsonl", adversarial=True)
    titles = [ax.get_title() for ax in metrics_figure(load_records(tmp_path / "a.jsonl")).axes]
    assert "discriminator loss" in titles


def test_lyra_plot_writes_the_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    _metrics(run / "metrics.jsonl", adversarial=True)
    assert main(["plot", str(run)]) == 0
    png = (run / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1200
    assert capsys.readouterr().out.strip() == f"wrote {run / 'metrics.png'}"
    out = tmp_path / "curves.png"
    out.write_bytes(b"keep")
    assert main(["plot", str(run), "-o", str(out)]) == 1           # an explicit output needs --force
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep"
    assert main(["plot", str(run), "-o", str(out), "--force"]) == 0 and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("content, message", [
    (None, "no metrics.jsonl"),
    ("", "holds no training or validation records yet"),
    ('{"split": "train", "step": 1, "loss": 1.0}\nnot json\n{"split": "val", "step": 2}\n', "line 2 is not a JSON record"),
    ('[1, 2]\n', "line 1 is not a metrics record"),
])
def test_lyra_plot_bad_input_is_one_line(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main(["plot", str(run)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (run / "metrics.png").exists()


def test_lyra_plot_a_missing_directory_and_a_missing_matplotlib(tmp_path, capsys, monkeypatch):
    assert main(["plot", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"lyra: error: {tmp_path / 'nope'}: no such directory\n"
    _metrics(tmp_path / "metrics.jsonl")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"lyra: error: lyra plot needs the 'matplotlib' package: {install_hint('plot')}\n"


def test_install_hint_names_the_checkout_of_an_editable_install(monkeypatch):
    import lyra.core.extras as extras

    assert editable_source() in (None, ROOT)          # this checkout, when installed with pip install -e
    monkeypatch.setattr(extras, "editable_source", lambda: Path("/src/my lyra"))
    assert install_hint("wandb") == "pip install -e '/src/my lyra[wandb]'"
    monkeypatch.setattr(extras, "editable_source", lambda: None)
    assert install_hint("plot") == "pip install 'lyra-codec[plot]'"
