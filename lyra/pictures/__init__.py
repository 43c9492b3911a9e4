"""Pictures: spectrograms of clips (labelled with matplotlib, else bare pixels), training
curves, and the minimal PNG writer they fall back on.

May import: `lyra.core`. See docs/architecture.md.
"""
