"""Measuring audio against audio: SI-SDR, the multi-resolution STFT distance (also training's
reconstruction loss) and the mel distance (`metrics`, `stft`), and comparing files with them
(`compare`: `lyra eval`).

May import: `lyra.core`, `lyra.audio`. See docs/architecture.md.
"""
