"""Foundations every other part of Lyra stands on; they import no other Lyra package.

Owns: the one user error type (`errors`), the version (`version`), durations as text
(`durations`), exact reads and writes on pipes (`streams`), what is at a path (`paths`),
atomic output files (`atomic`), optional extras (`extras`), the progress display
(`progress`), torchrun process groups (`distributed`), devices and precisions (`devices`)
and typed TOML (`toml`).

May import: the standard library and third-party packages only. See docs/architecture.md.
"""
