"""`lyra plugins`: the registered components by kind, who provides each, and the plugins tried.

Exits with status 1 when a plugin failed to load, so it doubles as an installation check.
"""

from __future__ import annotations

import typer

from lyra.core.errors import LyraError


def plugins() -> None:
    """List registered components by kind, the package providing each, and the plugins.

    Plugins are the entry points of the 'lyra.plugins' group in installed packages; each is
    shown as loaded (with what it registered) or failed (with its one-line error). Exits
    with status 1 if any failed.
    """
    from lyra import registry

    components = registry.list_components(load_plugins=True)
    width = max(len(c.name) for c in components)
    pwidth = max(len(c.provider) for c in components)
    kind = None
    for c in components:
        if c.kind != kind:
            kind = c.kind
            typer.echo(kind)
        source = f"plugin '{c.plugin}'" if c.plugin else ("built-in" if c.provider == registry.BUILTIN_PROVIDER else "")
        # Streaming concerns the codec's model only: a discriminator never streams.
        streams = c.streamable or c.kind == "discriminator"
        flags = [f for f, on in (("not compile-safe", not c.compile_safe), ("not streamable", not streams)) if on]
        flag = f"  ({', '.join(flags)})" if flags else ""
        typer.echo(f"  {c.name:<{width}}  {c.provider:<{pwidth}}  {source}{flag}".rstrip())

    tried = registry.plugins(load=False)
    typer.echo(f"plugins (entry-point group '{registry.ENTRY_POINT_GROUP}')")
    if not registry.REGISTRY.plugins_loaded:  # autoloading is off
        typer.echo(f"  not loaded: plugin autoloading is off ({registry.AUTOLOAD_ENV}=1); installed: "
                   f"{', '.join(_installed()) or 'none'}")
    elif not tried:
        typer.echo("  none installed")
    names = max((len(p.name) for p in tried), default=0)
    dists = max((len(f"{p.distribution} {p.version}") for p in tried), default=0)
    for p in tried:
        status = f"FAILED: {p.error}" if p.error else f"loaded: {', '.join(p.components) or 'nothing new'}"
        typer.echo(f"  {p.name:<{names}}  {f'{p.distribution} {p.version}':<{dists}}  {status}")
    failed = [p.name for p in tried if p.error]
    if failed:
        raise LyraError(f"{len(failed)} plugin(s) failed to load: {', '.join(failed)} (see above)")


def _installed() -> list[str]:
    """The plugin entry points installed, without loading them (autoloading is off)."""
    from importlib import metadata

    from lyra.registry import ENTRY_POINT_GROUP

    return sorted(f"{ep.name} ({ep.dist.name if ep.dist else '?'})"
                  for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
