"""`lyra plot` of metrics.jsonl values no axis can show (issue 22, item 13): 1e308, integers of
400 digits, infinities. They are not drawn (a gap in the line, counted in its label:
"loss (2 not drawn)"); everything else is. Plus a seeded fuzz of extreme values."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lyra.cli import main

pytest.importorskip("matplotlib")


def write(path, records: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in records))


def test_values_beyond_the_float_range_are_not_drawn_and_counted(tmp_path, capsys):
    from lyra.pictures.plots import metrics_figure
    from lyra.train.metrics_log import load_records

    run = tmp_path / "run"
    run.mkdir()
    huge = "1" + "0" * 400                                  # JSON holds it; no float does
    write(run / "metrics.jsonl", [
        '{"split": "train", "step": 1, "loss": 1.0, "lr": 1e308, "kl_weight": -1e308}',
        '{"split": "train", "step": 2, "loss": 1e308, "lr": 0.001, "kl_weight": 0.5}',
        f'{{"split": "train", "step": 3, "loss": {huge}, "lr": -{huge}}}',
        '{"split": "train", "step": 4, "loss": 0.5, "lr": "inf", "d_loss": "-inf"}',
        f'{{"split": "train", "step": {huge}, "loss": 0.25}}',   # a step no axis can place: left out
        '{"split": "val", "step": 4, "si_sdr": -1e308, "loss": 1e-320}',
    ])
    assert main(["plot", str(run)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == f"wrote {run / 'metrics.png'}"
    assert (run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    figure = metrics_figure(load_records(run / "metrics.jsonl"))
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible() and ax.get_title()}
    (loss,) = panels["training losses"].lines
    assert loss.get_label() == "loss (2 not drawn)"
    np.testing.assert_array_equal(loss.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(loss.get_ydata(), [1.0, np.nan, np.nan, 0.5])
    kl_axis = panels["KL weight and learning rate"]
    assert kl_axis.get_ylabel() == "KL weight (1 not drawn)"
    (si_sdr,) = panels["validation SI-SDR (dB)"].lines
    assert si_sdr.get_label() == "si_sdr (1 not drawn)"


EXTREMES = [0, -0.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324, 1e100, -1e100, 1e101, 1e-300,
            "inf", "-inf", "nan", "NaN", "Infinity", "x", True, None, 10 ** 400, -(10 ** 400), 2 ** 63, 3.5]


def test_fuzzed_extreme_values_always_draw(tmp_path):
    """Seeded records mixing extreme values in every key drawn: the figure always renders."""
    from lyra.pictures.plots import DISCRIMINATOR, TRAIN_LOSSES, VAL_DISTANCES, metrics_figure, render

    keys = {"train": [*TRAIN_LOSSES, *DISCRIMINATOR, "kl_weight", "lr"], "val": [*VAL_DISTANCES, "si_sdr"]}
    for seed in range(3):                        # matplotlib's layout takes about a second a figure
        rng = random.Random(seed)
        records = []
        for step in range(1, rng.randint(20, 40)):
            split = rng.choice(["train", "val"])
            record = {"split": split, "step": rng.choice([step, step, step, -step, 10 ** 30, 10 ** 400])}
            for key in rng.sample(keys[split], rng.randint(1, len(keys[split]))):
                record[key] = rng.choice(EXTREMES) if rng.random() < 0.5 else rng.uniform(-3, 3)
            records.append(record)
        path = tmp_path / f"m{seed}.jsonl"
        write(path, [json.dumps(r) for r in records])
        from lyra.train.metrics_log import load_records

        figure = metrics_figure(load_records(path), f"seed {seed}")
        figure.set_dpi(20)                       # the axes' arithmetic is the same, the pixels fewer
        pixels = render(figure)
        assert pixels.ndim == 3 and pixels.shape[-1] == 3, seed
