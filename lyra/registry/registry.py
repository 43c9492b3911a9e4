"""The `Registry`: a plain dict of components per kind, registration and lookup.

Lookup order: already registered -> the built-ins (`BUILTIN_MODULES`, imported on the first
lookup) -> the installed plugins, loaded once on the first miss (never at import) -> a
`LyraError` listing what exists, the closest name, and which plugins loaded or failed.
See docs/plugins.md.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from torch import nn

from lyra.core.errors import LyraError
from lyra.registry.components import (KINDS, Component, ComponentError, NameTakenError, OptionError, check_call,
                                      check_factory, tag)
from lyra.registry.options import with_options
from lyra.registry.discovery import AUTOLOAD_ENV, Plugin, autoload_disabled, load_entry_points, module_provider

# The built-in components register themselves the way a plugin does, on the first lookup.
BUILTIN_MODULES = ("lyra.model.blocks", "lyra.model.dac_snake", "lyra.model.bottlenecks.gaussian",
                   "lyra.model.bottlenecks.fsq", "lyra.model.bottlenecks.rvq", "lyra.model.discriminators")


@dataclass
class Registry:
    """A plain dict of components per kind, plus the state of plugin discovery."""

    components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    builtins_loaded: bool = False
    plugins_loaded: bool = False
    plugins: list[Plugin] = field(default_factory=list)
    _loading: Plugin | None = None  # the plugin being loaded: registrations are attributed to it

    # -- registration -----------------------------------------------------------------
    def register(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any] | None = None,
        *,
        override: bool = False,
        compile_safe: bool = True,
        streamable: bool = False,
        provider: str | None = None,
    ):
        """Register `factory` as `name` of `kind`; usable as a decorator when `factory` is None.

        A taken name raises unless ``override=True`` (never while a plugin loads);
        registering the same factory again under its name does nothing.
        """
        if not isinstance(name, str) or not name:
            raise LyraError(f"cannot register a {kind} under the name {name!r}")

        def _add(obj: Callable[..., Any]) -> Callable[..., Any]:
            check_factory(kind, name, obj)
            taken = self.components.get(kind, {}).get(name)
            if taken is not None and taken.factory is obj and not override:
                return obj
            if taken is not None and (self._loading is not None or not override):
                fix = ("a plugin cannot replace a registered component; choose another name"
                       if self._loading is not None else "pass override=True to replace it")
                raise NameTakenError(f"{kind} '{name}' is already registered by {taken.origin}; {fix}",
                                     f"{kind}/{name}")
            plugin = self._loading
            who = provider or (plugin.distribution if plugin else None) or module_provider(obj)
            self.components.setdefault(kind, {})[name] = Component(
                kind, name, obj, who, compile_safe, plugin.name if plugin else None, streamable
            )
            return obj

        return _add if factory is None else _add(factory)

    def unregister(self, kind: str, name: str) -> None:
        self.components.get(kind, {}).pop(name, None)

    @contextlib.contextmanager
    def attributing(self, plugin: Plugin) -> Iterator[None]:
        """Within: what is registered is attributed to `plugin` (and may not replace a name)."""
        self._loading = plugin
        try:
            yield
        finally:
            self._loading = None

    # -- lookup -----------------------------------------------------------------------
    def component(self, kind: str, name: str) -> Component:
        """The registered `Component`, loading built-ins and then plugins on a miss."""
        self._ensure_builtins()
        found = self.components.get(kind, {}).get(name)
        if found is None and not self.plugins_loaded and not autoload_disabled():
            self.load_plugins()
            found = self.components.get(kind, {}).get(name)
        if found is None:
            raise LyraError(self._unknown_message(kind, name))
        for plugin in self.failed_plugins:
            if plugin.contested == found.key:
                warnings.warn(f"{kind} '{name}' comes from {found.origin}; {plugin.label} also "
                              "registers that name and was not loaded", RuntimeWarning, stacklevel=3)
        return found

    def get(self, kind: str, name: str) -> Callable[..., Any]:
        return self.component(kind, name).factory

    def create(self, kind: str, name: str, *args: Any, **kwargs: Any) -> nn.Module:
        """Build the named component; what it builds must be an `nn.Module`.

        Inside `component_options`, the options configured for `name` are added to `kwargs`
        (they win over a caller's). The call is checked against the factory's signature first;
        every failure is a one-line `ComponentError` naming the component (and the key).
        """
        found = self.component(kind, name)
        kwargs = with_options(name, kwargs)
        check_call(found, args, kwargs)
        try:
            module = found.factory(*args, **kwargs)
        except ComponentError:
            raise  # a sub-component's, already naming it
        except OptionError as exc:
            raise ComponentError(f"{found.label}: {exc}", found, exc.key) from None
        except LyraError as exc:
            raise ComponentError(f"{found.label}: {exc}", found) from None
        if not isinstance(module, nn.Module):
            raise ComponentError(f"{kind} '{name}' from {found.origin} built a {type(module).__name__}, not an "
                                 "nn.Module; a component must be an nn.Module class or a function returning one",
                                 found)
        tag(module, found)  # read by `compile_unsafe` and `built_by`
        return module

    def named(self, name: str) -> list[Component]:
        """Every component registered as `name`, of any kind (loading plugins on a miss);
        a `LyraError` like `component`'s when there is none."""
        self._ensure_builtins()
        found = [entries[name] for entries in self.components.values() if name in entries]
        if not found and not self.plugins_loaded and not autoload_disabled():
            self.load_plugins()
            found = [entries[name] for entries in self.components.values() if name in entries]
        if not found:
            raise LyraError(self._unknown_message(None, name))
        return found

    def names(self, kind: str) -> list[str]:
        self._ensure_builtins()
        return sorted(self.components.get(kind, {}))

    def list(self, load_plugins: bool = True) -> list[Component]:
        """Every registered component, by kind (in model order) and name."""
        self._ensure_builtins()
        if load_plugins and not self.plugins_loaded and not autoload_disabled():
            self.load_plugins()
        kinds = [*KINDS, *sorted(set(self.components) - set(KINDS))]
        return [c for kind in kinds for _, c in sorted(self.components.get(kind, {}).items())]

    @property
    def loaded_plugins(self) -> list[str]:
        return [p.name for p in self.plugins if p.error is None]

    @property
    def failed_plugins(self) -> list[Plugin]:
        return [p for p in self.plugins if p.error is not None]

    # -- discovery --------------------------------------------------------------------
    def _ensure_builtins(self) -> None:
        if not self.builtins_loaded:
            self.builtins_loaded = True
            for module in BUILTIN_MODULES:
                importlib.import_module(module)

    def load_plugins(self) -> None:
        """Load every entry point of the plugin group once; failures are recorded, not raised."""
        self._ensure_builtins()  # so a plugin taking a built-in's name is caught
        self.plugins_loaded = True
        load_entry_points(self)

    # -- state (tests) ----------------------------------------------------------------
    def snapshot(self) -> "Registry":
        """A copy of the current state (built-ins loaded first), for `restore`."""
        self._ensure_builtins()
        return Registry({kind: dict(entries) for kind, entries in self.components.items()},
                        self.builtins_loaded, self.plugins_loaded, list(self.plugins))

    def restore(self, saved: "Registry") -> None:
        self.components = {kind: dict(entries) for kind, entries in saved.components.items()}
        self.builtins_loaded = saved.builtins_loaded
        self.plugins_loaded = saved.plugins_loaded
        self.plugins = list(saved.plugins)

    def _unknown_message(self, kind: str | None, name: str) -> str:
        """Why `name` (of `kind`; None: of any kind) is not found, with what is."""
        if kind is not None and kind not in self.components:
            return f"unknown component kind '{kind}' (kinds: {', '.join(sorted(self.components))})"
        if kind is None:
            known = sorted({n for entries in self.components.values() for n in entries})
            msg = f"no component is registered as '{name}'"
        else:
            known = sorted(self.components[kind])
            msg = f"unknown {kind} '{name}'"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            msg += f" (did you mean '{close[0]}'?)"
        msg += f"; registered: {', '.join(known) or 'none'}"
        if not self.plugins_loaded and autoload_disabled():
            msg += f"; plugin autoloading is off ({AUTOLOAD_ENV}=1)"
        else:
            msg += f"; plugins loaded: {', '.join(self.loaded_plugins) or 'none'}"
        if self.failed_plugins:
            bad = "; ".join(f"{p.label}: {p.error}" for p in self.failed_plugins)
            msg += f"; plugins that failed to load: {bad}"
        return msg
