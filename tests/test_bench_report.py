"""tools/bench_report.py: a saved pytest-benchmark run -> the Markdown table of BENCHMARKS.md."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_report():
    """tools/ is not a package: load the script from its path."""
    name = "_lyra_tools_bench_report"
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "bench_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def _bench(group, variant, median, work, unit, peak, **extra):
    return {"group": group, "name": f"test[{variant}]", "stats": {"median": median, "mean": median},
            "extra_info": {"variant": variant, "work_per_call": work, "throughput_unit": unit,
                           "peak_mem_bytes": peak, "peak_mem_method": "rss_growth", **extra}}


def _run(benchmarks):
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "python_version": "3.11.7",
                             "system": "Linux", "release": "6", "lyra": {"torch": "2.x", "device": "cpu", "size": "small"}},
            "commit_info": {"id": "0123456789abcdef", "dirty": True}, "datetime": "2026-01-01T00:00:00",
            "benchmarks": benchmarks}


def _table(text: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[0] != "Benchmark":
            rows[cells[0], cells[1]] = cells[2:]
    return rows


def test_ratios_are_recomputed_from_the_saved_medians(bench_report, tmp_path):
    rnd = random.Random()
    eager_t, comp_t = rnd.uniform(0.1, 1.0), rnd.uniform(0.01, 0.5)
    eager_m, comp_m = rnd.randrange(10, 500) * 2**20, rnd.randrange(10, 500) * 2**20
    copy_t, snake_t = rnd.uniform(1e-3, 2e-3), rnd.uniform(2e-3, 9e-3)
    gb = 0.0167
    run = _run([  # a variant listed before its eager baseline: order must not matter
        _bench("model encode", "compile", comp_t, 1.5, "audio s/s", comp_m, load_avg_1m=2.25),
        _bench("model encode", "eager", eager_t, 1.5, "audio s/s", eager_m, load_avg_1m=0.5),
        _bench("copy float32 [2x3]", "copy", copy_t, gb, "GB/s", 0),
        _bench("snake forward float32 [2x3]", "eager", snake_t, gb, "GB/s", 2**20,
               copy_group="copy float32 [2x3]"),
        {"group": None, "name": "test_other", "stats": {"median": 1.0}, "extra_info": {}},
    ])
    path = tmp_path / "0001_run.json"
    path.write_text(json.dumps(run))
    out = tmp_path / "table.md"
    assert bench_report.main([str(path), "-o", str(out)]) == 0
    rows = _table(out.read_text())

    median, throughput, speedup, peak, mem_ratio, _ = rows["model encode", "compile"]
    assert throughput == f"{1.5 / comp_t:.2f} audio s/s"
    assert speedup == f"{eager_t / comp_t:.2f}x"
    assert peak == f"{comp_m / 2**20:.1f} MiB"
    assert mem_ratio == f"{comp_m / eager_m:.2f}x"
    assert rows["model encode", "eager"][2] == "1.00x"
    assert rows["snake forward float32 [2x3]", "eager"][5] == f"{copy_t / snake_t:.0%}"
    assert rows["copy float32 [2x3]", "copy"][2] == "–"  # no eager in its group
    assert not any(name == "test_other" for _, name in rows)  # not a Lyra-suite benchmark
    assert "Test CPU (2 logical cores)" in out.read_text()
    assert "load average 0.5-2.2 during the run" in out.read_text()


def test_newest_saved_run_is_the_default(bench_report, tmp_path, monkeypatch):
    storage = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    storage.mkdir(parents=True)
    old, new = storage / "0001_a.json", storage / "0002_b.json"
    old.write_text(json.dumps(_run([_bench("g", "eager", 1.0, 1.0, "audio s/s", 1)])))
    new.write_text(json.dumps(_run([_bench("h", "eager", 1.0, 1.0, "audio s/s", 1)])))
    assert bench_report.newest_run(tmp_path / ".benchmarks") == new


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not a JSON file"),
    ('{"machine_info": {}}', "not a pytest-benchmark run"),
    ('{"benchmarks": []}', "no results of the Lyra benchmark suite"),
])
def test_bad_input_is_a_one_line_error(bench_report, tmp_path, capsys, content, message):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "table.md"
    assert bench_report.main([str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
