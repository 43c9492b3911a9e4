"""The measuring scripts in tools/ run as BENCHMARKS.md says (at tiny sizes), and print their tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import lyra_env

ROOT = Path(__file__).resolve().parents[1]


def tool(*args: str) -> str:
    """Run `python tools/ARGS...`; its stdout (the run must succeed)."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / args[0]), *args[1:]], capture_output=True,
                          text=True, env=lyra_env(), cwd=ROOT, timeout=1200)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(table: str, first: str) -> list[list[str]]:
    """The cells of the Markdown rows whose first cell is `first`."""
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]
    return [c for c in cells if c[0] == first]


def test_codec_bench_memory_measures_the_streaming_cli():
    # Two lengths, as BENCHMARKS.md runs it: the second run writes over the first one's files.
    out = tool("codec_bench.py", "memory", "--model", "small", "--minutes", "0.01", "0.02", "--threads", "1")
    table = rows(out, "small")
    assert [row[1] for row in table] == ["0.01 min", "0.02 min"]
    for row in table:
        assert row[2].startswith("--stream")
        peaks = [int(m.replace(",", "")) for m in re.findall(r"([\d,]+) MiB \(", " ".join(row))]
        assert len(peaks) == 2 and all(p > 100 for p in peaks)   # encode and decode: torch alone is more


def test_precision_check_compares_bf16_with_fp32():
    out = tool("precision_check.py", "--model", "small", "--seconds", "0.5", "--precisions", "bf16")
    [row] = rows(out, "bf16")
    rel, decode_db, round_trip_db = float(row[2]), float(row[3]), float(row[4])
    assert 0 < rel < 0.05 and decode_db > 25 and round_trip_db > 25


@pytest.mark.slow
def test_compile_ab_times_three_variants():
    out = tool("compile_ab.py", "--samples", "4096", "--rounds", "1", "--profile")
    for call in ("encode", "decode"):
        assert {r[1] for r in rows(out, call)} == {"eager", "staged", "whole"}
        share = re.search(rf"staged {call}, CPU time by torch.profiler: convolutions (\d+)%", out)
        assert share and 0 < int(share.group(1)) <= 100


def test_sat_bench_times_stable_audio_tools_against_lyra(tmp_path):
    out = tool("sat_bench.py", "--tiny", "--seconds", "0.05", "--rounds", "1", "--threads", "1",
               "--json", str(tmp_path / "sat.json"))
    for call in ("encode", "decode"):
        table = {r[1]: r for r in rows(out, call)}
        assert set(table) == {"stable-audio-tools", "lyra", "lyra --compile"}
        assert table["stable-audio-tools"][4] == "1.00x"
        assert all(float(r[5]) < 1e-4 for r in table.values())     # the same outputs, float rounding apart
