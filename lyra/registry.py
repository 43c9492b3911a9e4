"""The component registry: the one way blocks are found, for built-ins and plugins alike.

A component is a factory (usually an `nn.Module` subclass) stored under a name within a kind:

    from lyra import registry

    @registry.register("activation", "snake")
    class Snake(nn.Module): ...

    registry.get("activation", "snake")     # -> the class
    registry.create("activation", "snake", channels=128)

Lookup order: already registered -> the installed plugins of the ``lyra.plugins`` entry-point
group, loaded once on the first miss (never at import) -> a `LyraError` listing what exists
and which plugins were loaded. A plugin whose import fails is reported by its entry-point
name and does not stop the others. ``LYRA_DISABLE_PLUGIN_AUTOLOAD=1`` turns autoloading off.

The built-in components live in `lyra.blocks` and register themselves exactly the way a
plugin does; they are imported lazily, on the first lookup, like plugins.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

from lyra.errors import LyraError

ENTRY_POINT_GROUP = "lyra.plugins"
AUTOLOAD_ENV = "LYRA_DISABLE_PLUGIN_AUTOLOAD"

KINDS = ("activation", "residual_unit", "encoder_block", "decoder_block")
BUILTIN_MODULES = ("lyra.blocks",)


@dataclass(frozen=True)
class Component:
    """One registered factory and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    provider: str  # distribution (package) name, or "lyra" for built-ins
    compile_safe: bool = True


@dataclass
class PluginFailure:
    entry_point: str
    value: str
    error: str


@dataclass
class Registry:
    """A plain dict of components per kind, plus the state of plugin discovery."""

    components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    builtins_loaded: bool = False
    plugins_loaded: bool = False
    loaded_plugins: list[str] = field(default_factory=list)
    failed_plugins: list[PluginFailure] = field(default_factory=list)
    _current_provider: str | None = None

    # -- registration -----------------------------------------------------------------
    def register(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any] | None = None,
        *,
        override: bool = False,
        compile_safe: bool = True,
        provider: str | None = None,
    ):
        """Register `factory` as `name` of `kind`; usable as a decorator when `factory` is None."""
        if kind not in self.components:
            self.components[kind] = {}

        def _add(obj: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(obj):
                raise LyraError(f"cannot register {kind} '{name}': {obj!r} is not callable")
            if not isinstance(name, str) or not name:
                raise LyraError(f"cannot register a {kind} under the name {name!r}")
            taken = self.components[kind].get(name)
            if taken is not None and not override and taken.factory is not obj:
                raise LyraError(
                    f"{kind} '{name}' is already registered by {taken.provider}; "
                    "pass override=True to replace it"
                )
            who = provider or self._current_provider or _module_provider(obj)
            self.components[kind][name] = Component(kind, name, obj, who, compile_safe)
            return obj

        return _add if factory is None else _add(factory)

    def unregister(self, kind: str, name: str) -> None:
        self.components.get(kind, {}).pop(name, None)

    # -- lookup -----------------------------------------------------------------------
    def component(self, kind: str, name: str) -> Component:
        """The registered `Component`, loading built-ins and then plugins on a miss."""
        self._ensure_builtins()
        found = self.components.get(kind, {}).get(name)
        if found is None and not self.plugins_loaded and not _autoload_disabled():
            self.load_plugins()
            found = self.components.get(kind, {}).get(name)
        if found is None:
            raise LyraError(self._unknown_message(kind, name))
        return found

    def get(self, kind: str, name: str) -> Callable[..., Any]:
        return self.component(kind, name).factory

    def create(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(kind, name)(*args, **kwargs)

    def names(self, kind: str) -> list[str]:
        self._ensure_builtins()
        return sorted(self.components.get(kind, {}))

    def list(self, load_plugins: bool = True) -> list[Component]:
        """Every registered component, sorted by kind and name."""
        self._ensure_builtins()
        if load_plugins and not self.plugins_loaded and not _autoload_disabled():
            self.load_plugins()
        return [c for kind in sorted(self.components) for _, c in sorted(self.components[kind].items())]

    # -- discovery --------------------------------------------------------------------
    def _ensure_builtins(self) -> None:
        if not self.builtins_loaded:
            self.builtins_loaded = True
            for module in BUILTIN_MODULES:
                importlib.import_module(module)

    def load_plugins(self) -> None:
        """Load every entry point of the plugin group once; failures are recorded, not raised."""
        self.plugins_loaded = True
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            provider = ep.dist.name if ep.dist is not None else ep.name
            self._current_provider = provider
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type):
                    obj(self)  # an entry point may name a `register(registry)` hook
                self.loaded_plugins.append(ep.name)
            except Exception as exc:  # a broken plugin must not break the others
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.failed_plugins.append(PluginFailure(ep.name, ep.value, message))
            finally:
                self._current_provider = None

    def _unknown_message(self, kind: str, name: str) -> str:
        if kind not in self.components:
            return f"unknown component kind '{kind}' (kinds: {', '.join(sorted(self.components))})"
        known = sorted(self.components[kind])
        msg = f"unknown {kind} '{name}'"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            msg += f" (did you mean '{close[0]}'?)"
        msg += f"; registered: {', '.join(known) or 'none'}"
        if _autoload_disabled():
            msg += f"; plugin autoloading is off ({AUTOLOAD_ENV}=1)"
        else:
            msg += f"; plugins loaded: {', '.join(self.loaded_plugins) or 'none'}"
        if self.failed_plugins:
            bad = ", ".join(f"{f.entry_point} ({f.error})" for f in self.failed_plugins)
            msg += f"; plugins that failed to load: {bad}"
        return msg


def _autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip() not in ("", "0")


def _module_provider(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    top = module.split(".")[0]
    if top in ("lyra", "lyra_kernels"):
        return "lyra"
    dists = metadata.packages_distributions().get(top)
    return dists[0] if dists else (top or "unknown")


# The process-wide registry. Module-level functions below are the public interface.
REGISTRY = Registry()


def register(kind: str, name: str, factory: Callable[..., Any] | None = None, **kwargs: Any):
    return REGISTRY.register(kind, name, factory, **kwargs)


def get(kind: str, name: str) -> Callable[..., Any]:
    return REGISTRY.get(kind, name)


def component(kind: str, name: str) -> Component:
    return REGISTRY.component(kind, name)


def create(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    return REGISTRY.create(kind, name, *args, **kwargs)


def names(kind: str) -> list[str]:
    return REGISTRY.names(kind)


def list_components(load_plugins: bool = True) -> list[Component]:
    return REGISTRY.list(load_plugins)
