"""Bounds on what a config, an option or a file may ask Lyra to allocate or start, checked
before anything is allocated (no torch here: configs are checked without it)."""

# The highest sample rate read, written or resampled to: the top of common audio hardware
# (WAV holds it; FLAC only up to 655350 Hz, which writing FLAC checks).
MAX_SAMPLE_RATE = 768_000
MAX_THREADS = 1024   # CPU threads a config or --threads may ask for (torch crashes asked for a million)
