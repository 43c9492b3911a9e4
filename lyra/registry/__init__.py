"""The component registry: the one way blocks are found, for built-ins and plugins alike.

    from lyra import registry

    @registry.register("activation", "snake")
    class Snake(nn.Module): ...

    registry.get("activation", "snake")     # -> the class
    registry.create("activation", "snake", channels=128)

The module-level functions below act on the process-wide `REGISTRY`. What a component is
(`components`), option scopes (`options`), plugin discovery (`discovery`) and the `Registry`
class (`registry`) each have a module. The contract for plugin authors is docs/plugins.md.

May import: `lyra.core` and torch. The built-ins (`lyra.model.blocks`, `lyra.model.bottlenecks`,
`lyra.model.discriminators`) register themselves; they are imported by name on the first
lookup, never by an import statement. See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from lyra.registry.components import (ARGUMENTS, BUILTIN_PROVIDER, KINDS, Component, ComponentError, NameTakenError,
                                      OptionError, built_by, compile_unsafe)
from lyra.registry.options import component_options
from lyra.registry.discovery import AUTOLOAD_ENV, ENTRY_POINT_GROUP, Plugin, autoload_disabled
from lyra.registry.registry import BUILTIN_MODULES, Registry

__all__ = [
    "ARGUMENTS", "AUTOLOAD_ENV", "BUILTIN_MODULES", "BUILTIN_PROVIDER", "ENTRY_POINT_GROUP", "KINDS", "REGISTRY",
    "Component", "ComponentError", "NameTakenError", "OptionError", "Plugin", "Registry",
    "autoload_disabled", "built_by", "compile_unsafe", "component", "component_options", "create", "failed_plugins",
    "get", "list_components", "named", "names", "plugins", "register",
]

# The process-wide registry. The functions below are the public interface.
REGISTRY = Registry()


def register(kind: str, name: str, factory: Callable[..., Any] | None = None, **kwargs: Any):
    return REGISTRY.register(kind, name, factory, **kwargs)


def get(kind: str, name: str) -> Callable[..., Any]:
    return REGISTRY.get(kind, name)


def component(kind: str, name: str) -> Component:
    return REGISTRY.component(kind, name)


def create(kind: str, name: str, *args: Any, **kwargs: Any) -> nn.Module:
    return REGISTRY.create(kind, name, *args, **kwargs)


def names(kind: str) -> list[str]:
    return REGISTRY.names(kind)


def named(name: str) -> list[Component]:
    return REGISTRY.named(name)


def list_components(load_plugins: bool = True) -> list[Component]:
    return REGISTRY.list(load_plugins)


def plugins(load: bool = True) -> list[Plugin]:
    """Every plugin entry point tried so far (loading them first, unless `load` is False)."""
    if load:
        REGISTRY.list(load_plugins=True)
    return list(REGISTRY.plugins)


def failed_plugins() -> list[Plugin]:
    """The plugins that failed to load so far, with their one-line errors."""
    return REGISTRY.failed_plugins
