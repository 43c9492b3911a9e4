"""Applications of the training engine: `lyra demo` (`demo`) and the training benchmark
(`python -m lyra.apps.benchmark`).

May import: everything below the command line. See docs/architecture.md.
"""
