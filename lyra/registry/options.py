"""Option scopes: while a model is built, the options its config sets per component name.

Inside `component_options(options)`, `Registry.create` adds ``options[name]`` to every call
that builds a component named `name`, wherever in the model it is built, so a block never
passes its children's options down. See docs/plugins.md.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Iterator, Mapping


@dataclass
class _OptionScope:
    options: Mapping[str, Mapping[str, Any]]
    built: set[str]


_SCOPE: contextvars.ContextVar[_OptionScope | None] = contextvars.ContextVar("lyra_component_options",
                                                                             default=None)


@contextlib.contextmanager
def component_options(options: Mapping[str, Mapping[str, Any]]) -> Iterator[set[str]]:
    """Within: `create` gives ``options[name]`` to every component named `name` it builds, and
    to no other. Yields the set of names built so far (to find options nothing used)."""
    scope = _OptionScope(options, set())
    token = _SCOPE.set(scope)
    try:
        yield scope.built
    finally:
        _SCOPE.reset(token)


def with_options(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` for building a component named `name`: inside `component_options`, plus the
    options configured for `name` (they win over a caller's), and `name` counted as built."""
    scope = _SCOPE.get()
    if scope is None:
        return kwargs
    scope.built.add(name)
    return {**kwargs, **scope.options.get(name, {})}
