"""Turn a saved `pytest benchmarks` run (pytest-benchmark JSON) into a Markdown table.

    python tools/bench_report.py                       # the newest run under .benchmarks/
    python tools/bench_report.py RUN.json -o table.md  # a given run, written atomically

One row per benchmark: variant, median time, throughput, speedup over the eager variant of
the same group, peak memory, memory over eager, and, for the Snake op, the fraction of the
copy bandwidth measured in the same run. Throughputs and ratios are recomputed here from
each benchmark's median round and the work per call recorded in its ``extra_info`` (see
`benchmarks/harness.py`), so they do not depend on the order the benchmarks ran in.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyra.core.atomic import atomic_write
from lyra.core.errors import LyraError

DEFAULT_STORAGE = Path(".benchmarks")
VARIANT_ORDER = ("copy", "eager", "lyra", "compile", "reference_compiled", "compile bf16", "reference_compiled bf16")


@dataclass(frozen=True)
class Row:
    group: str
    variant: str
    median_s: float
    work: float | None
    unit: str | None
    peak_bytes: int | None
    copy_group: str | None

    @property
    def throughput(self) -> float | None:
        return self.work / self.median_s if self.work is not None and self.median_s > 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path,
                        help=f"saved run (default: the newest JSON under {DEFAULT_STORAGE}/)")
    parser.add_argument("-o", "--output", default="-", help="Markdown file to write (default: stdout)")
    args = parser.parse_args(argv)
    try:
        path = args.run or newest_run(DEFAULT_STORAGE)
        text = report(load_run(path), path)
        with atomic_write(args.output) as f:
            f.write(text.encode())
    except LyraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def newest_run(storage: Path) -> Path:
    runs = sorted(storage.glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise LyraError(f"{storage}/: no saved benchmark run; run `pytest benchmarks --benchmark-autosave` first")
    return runs[-1]


def load_run(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LyraError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LyraError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise LyraError(f"{path}: not a pytest-benchmark run (no 'benchmarks' list)")
    return data


def rows_of(run: dict[str, Any]) -> list[Row]:
    rows = []
    for bench in run["benchmarks"]:
        info = bench.get("extra_info") or {}
        stats = bench.get("stats") or {}
        if "variant" not in info or not stats.get("median"):
            continue  # not one of this suite's benchmarks
        rows.append(Row(
            group=bench.get("group") or bench["name"], variant=info["variant"], median_s=stats["median"],
            work=info.get("work_per_call"), unit=info.get("throughput_unit"),
            peak_bytes=info.get("peak_mem_bytes"), copy_group=info.get("copy_group"),
        ))
    return rows


def report(run: dict[str, Any], path: Path) -> str:
    rows = rows_of(run)
    if not rows:
        raise LyraError(f"{path}: the run holds no results of the Lyra benchmark suite")
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    lines = [_machine_line(run, path), "",
             "| Benchmark | Variant | Median | Throughput | Speedup vs eager | Peak memory | Memory vs eager | Of copy BW |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for group, members in groups.items():
        members.sort(key=lambda r: VARIANT_ORDER.index(r.variant) if r.variant in VARIANT_ORDER else 99)
        eager = next((r for r in members if r.variant == "eager"), None)
        for row in members:
            copy = groups[row.copy_group][0] if row.copy_group in groups else None
            lines.append("| " + " | ".join(_cells(row, eager, copy)) + " |")
    lines += ["", _memory_note(run)]
    return "\n".join(lines) + "\n"


def _cells(row: Row, eager: Row | None, copy: Row | None) -> list[str]:
    """One table row; ratios are against `eager` (same group) and `copy` (the copy benchmark)."""
    speedup = _times(eager.median_s / row.median_s) if eager else "–"
    mem_ratio = "–"
    if eager and eager.peak_bytes and row.peak_bytes is not None:
        mem_ratio = _times(row.peak_bytes / eager.peak_bytes)
    of_copy = ""
    if copy and copy.throughput and row.throughput is not None:
        of_copy = f"{row.throughput / copy.throughput:.0%}"
    return [row.group, row.variant, _seconds(row.median_s), _throughput(row), speedup,
            _mib(row.peak_bytes), mem_ratio, of_copy]


def _machine_line(run: dict[str, Any], path: Path) -> str:
    machine = run.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    lyra = machine.get("lyra") or {}
    commit = run.get("commit_info") or {}
    parts = [
        f"{cpu.get('brand_raw', machine.get('processor', 'unknown CPU'))} ({cpu.get('count', '?')} logical cores)",
        f"{machine.get('system', '')} {machine.get('release', '')}".strip(),
        f"Python {machine.get('python_version', '?')}",
        f"torch {lyra.get('torch', '?')}",
        f"device {lyra.get('device', '?')}",
        f"size `{lyra.get('size', '?')}`",
    ]
    loads = [(b.get("extra_info") or {}).get("load_avg_1m") for b in run["benchmarks"]]
    loads = [x for x in loads if isinstance(x, (int, float))]
    if loads:
        parts.append(f"1-minute load average {min(loads):.1f}-{max(loads):.1f} during the run")
    when = run.get("datetime", "?")
    rev = commit.get("id", "")[:9] + (" (uncommitted changes)" if commit.get("dirty") else "")
    return (f"Run `{path.name}` ({when}, commit {rev or '?'}): " + ", ".join(parts)
            + f". Table: `python tools/bench_report.py {path}`.")


def _memory_note(run: dict[str, Any]) -> str:
    methods = {(b.get("extra_info") or {}).get("peak_mem_method") for b in run["benchmarks"]}
    notes = []
    if "rss_growth" in methods:
        notes.append("on CPU, the growth of the process's resident set during one call")
    if "cuda_max_allocated" in methods:
        notes.append("on CUDA, `torch.cuda.max_memory_allocated` during one call")
    if any(isinstance(m, str) and m.startswith("unavailable") for m in methods):
        notes.append("not measured where marked n/a")
    return ("Median of the timed rounds; throughput is the work of one call over the median. "
            f"Peak memory: {'; '.join(notes) or 'not recorded'}.")


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def _throughput(row: Row) -> str:
    value = row.throughput
    if value is None:
        return "–"
    unit = row.unit or ""
    return f"{value:.2f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def _times(x: float) -> str:
    return f"{x:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
