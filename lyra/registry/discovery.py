"""Plugin discovery: finding and loading the entry points of the ``lyra.plugins`` group, the
autoload switch, and which package a component comes from. See docs/plugins.md.

A plugin names a function ``register(registry)`` or a module whose import registers its
components. One that fails is rolled back whole and recorded with a one-line error; the
others and the built-ins keep working.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, replace
from typing import Any

from lyra.core.errors import LyraError, first_line
from lyra.registry.components import BUILTIN_PROVIDER, NameTakenError

ENTRY_POINT_GROUP = "lyra.plugins"
AUTOLOAD_ENV = "LYRA_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class Plugin:
    """One entry point of the plugin group and what loading it did."""

    name: str  # entry-point name
    value: str  # "module:function" or "module"
    distribution: str  # the installed package that declares it
    version: str = ""
    components: tuple[str, ...] = ()  # "kind/name" of what it registered
    error: str | None = None  # one line, when loading failed (the plugin is then rolled back)
    contested: str | None = None  # "kind/name" it failed to take because it was registered

    @property
    def label(self) -> str:
        dist = f"{self.distribution} {self.version}" if self.version else self.distribution
        return f"plugin '{self.name}' ({dist})"


def autoload_disabled() -> bool:
    """Whether ``LYRA_DISABLE_PLUGIN_AUTOLOAD`` turns plugin autoloading off."""
    return os.environ.get(AUTOLOAD_ENV, "").strip() not in ("", "0")


def load_entry_points(registry: Any) -> None:
    """Load every entry point of the plugin group into `registry` (a `Registry`), appending a
    `Plugin` record for each to ``registry.plugins``; failures are recorded, not raised."""
    from importlib import metadata  # scanning installed packages costs time: only here

    by_name = {p.name: p for p in registry.plugins}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        record = Plugin(ep.name, ep.value, dist.name if dist else "unknown package",
                        dist.version if dist else "")
        if ep.name in by_name:
            record = replace(record, error=f"entry-point name '{ep.name}' is already used by "
                                           f"{by_name[ep.name].label}")
        else:
            record = _load(registry, ep, record)
        by_name.setdefault(ep.name, record)
        registry.plugins.append(record)


def _load(registry: Any, ep: Any, record: Plugin) -> Plugin:
    """Run one plugin; on any failure undo what it registered and return the error."""
    before = {kind: dict(entries) for kind, entries in registry.components.items()}
    try:
        with registry.attributing(record):
            obj = ep.load()
            if inspect.ismodule(obj):
                pass  # importing it registered its components
            elif callable(obj) and not isinstance(obj, type):
                obj(registry)  # a `register(registry)` hook
            else:
                raise LyraError(f"entry point '{ep.value}' is a {type(obj).__name__}; it must name "
                                "a module or a register(registry) function")
    except Exception as exc:  # a broken plugin must not break the others
        registry.components = before
        return replace(record, error=_one_line(exc),
                       contested=exc.key if isinstance(exc, NameTakenError) else None)
    added = sorted(f"{kind}/{name}" for kind, entries in registry.components.items()
                   for name in entries if name not in before.get(kind, {}))
    return replace(record, components=tuple(added))


def _one_line(exc: BaseException) -> str:
    """A plugin's failure as one line: a `LyraError`'s message, else also the exception's type."""
    if isinstance(exc, LyraError) or not str(exc).strip():
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


def module_provider(obj: Any) -> str:
    """The installed package that provides `obj` (by its module), or "lyra" for Lyra's own."""
    module = getattr(obj, "__module__", "") or ""
    top = module.split(".")[0]
    if top in ("lyra", "lyra_kernels"):
        return BUILTIN_PROVIDER
    from importlib import metadata

    dists = metadata.packages_distributions().get(top)
    return dists[0] if dists else (top or "unknown")
