"""Bounds on what a config, an option or a file may ask Lyra to allocate or start, checked
before anything is allocated (no torch here: configs are checked without it)."""

MAX_THREADS = 1024   # CPU threads a config or --threads may ask for (torch crashes asked for a million)
