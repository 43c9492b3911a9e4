"""Lyra's benchmark suite (pytest-benchmark): run with ``pytest benchmarks``; see BENCHMARKS.md."""
