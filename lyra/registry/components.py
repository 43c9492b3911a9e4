"""What a component is: the kinds, the arguments each kind gets, the `Component` record, the
errors, and the checks on a factory and on a call to it. See docs/plugins.md.

A component is an `nn.Module` factory (an `nn.Module` subclass, or a function returning a
module). Lyra calls it with the keyword arguments of its kind (`ARGUMENTS`); every other
keyword parameter it names is an *option*.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from lyra.core.errors import LyraError

KINDS = ("activation", "residual_unit", "encoder_block", "decoder_block", "bottleneck", "discriminator")
BUILTIN_PROVIDER = "lyra"
_TAG = "_lyra_components"  # attribute `tag` sets on the modules `create` builds

# The keyword arguments Lyra passes to each kind's factory (the constructor signatures are in
# `lyra.model.blocks`, `lyra.model.bottlenecks` and `lyra.model.discriminators`). Any other keyword parameter a factory
# names is an option of that component.
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "activation": ("channels",),
    "residual_unit": ("channels", "dilation", "kernel_size", "activation"),
    "encoder_block": ("in_channels", "out_channels", "stride", "dilations", "kernel_size", "activation",
                      "residual_unit"),
    "decoder_block": ("in_channels", "out_channels", "stride", "dilations", "kernel_size", "activation",
                      "residual_unit"),
    "bottleneck": ("latent_dim",),
    "discriminator": ("channels", "sample_rate"),
}


@dataclass(frozen=True)
class Component:
    """One registered factory and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    provider: str  # distribution (package) name, or "lyra" for built-ins
    compile_safe: bool = True
    plugin: str | None = None  # the entry point that registered it, if a plugin did
    streamable: bool = False  # mixes time only through the Conv1d/ConvTranspose1d layers it holds

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def origin(self) -> str:
        """Who provided it, for messages: ``plugin 'example' (lyra-plugin-example)``."""
        if self.plugin is not None:
            return f"plugin '{self.plugin}' ({self.provider})"
        return "lyra (built-in)" if self.provider == BUILTIN_PROVIDER else f"package '{self.provider}'"

    @property
    def label(self) -> str:
        """The component, for messages: ``activation 'aa_snake' (plugin 'example' (lyra-plugin-example))``."""
        return f"{self.kind} '{self.name}' ({self.origin})"

    def options(self) -> tuple[str, ...] | None:
        """The options its factory takes: the keyword parameters it names other than the
        arguments Lyra passes to its kind. None when its signature cannot be read."""
        sig = signature(self.factory)
        if sig is None:
            return None
        passed = ARGUMENTS.get(self.kind, ())
        return tuple(p.name for p in sig.parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in passed)

    def option_problem(self, key: str) -> str | None:
        """Why option `key` cannot be given to this component (one line), or None if it can."""
        if key in ARGUMENTS.get(self.kind, ()):
            return f"{self.label}: '{key}' is set by the model for every {self.kind}, it is not an option"
        accepted = self.options()
        if accepted is None or key in accepted:
            return None
        takes = f"its options: {', '.join(accepted)}" if accepted else "it takes no options"
        return f"{self.label} does not accept option '{key}' ({takes})"


class NameTakenError(LyraError):
    """Registering a name that is already registered."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class ComponentError(LyraError):
    """A component that could not be built as asked; the message names it (one line).

    `component` is the innermost component at fault, `key` the argument or option at fault
    (None when it is not one key), so a caller can name the config key the user must change.
    """

    def __init__(self, message: str, component: Component, key: str | None = None) -> None:
        super().__init__(message)
        self.component = component
        self.key = key


class OptionError(LyraError):
    """Raised by a factory that rejects the value of one of its options:
    ``raise OptionError("taps", f"must be an odd integer >= 3, got {taps!r}")``. `create`
    turns it into a `ComponentError` naming the component and the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def check_factory(kind: str, name: str, obj: Any) -> None:
    """A component must build an `nn.Module`: a subclass, or a function (checked in `create`)."""
    what = f"cannot register {kind} '{name}'"
    if isinstance(obj, nn.Module):
        raise LyraError(f"{what}: got an nn.Module instance ({type(obj).__name__}); "
                        "register its class or a function that builds one")
    if isinstance(obj, type) and not issubclass(obj, nn.Module):
        raise LyraError(f"{what}: class {obj.__qualname__} is not an nn.Module subclass")
    if not callable(obj):
        raise LyraError(f"{what}: {obj!r} is not callable; register an nn.Module class or a "
                        "function returning one")


def signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    """The factory's call signature (cached: `create` reads it on every call), or None."""
    try:
        return _cached_signature(factory)
    except TypeError:  # an unhashable callable object: read it each time
        return _read_signature(factory)


def _read_signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return None


_cached_signature = functools.lru_cache(maxsize=None)(_read_signature)


def check_call(found: Component, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`found`'s factory takes these arguments, or a `ComponentError` says which one it does not."""
    sig = signature(found.factory)
    if sig is None:
        return
    try:
        sig.bind(*args, **kwargs)
        return
    except TypeError as exc:
        why = str(exc)
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    passed = ARGUMENTS.get(found.kind, ())
    for key in kwargs:
        p = params.get(key)
        if (p is None or p.kind is p.POSITIONAL_ONLY) and not takes_any:
            if key in passed:
                raise ComponentError(f"{found.label} does not take '{key}', which Lyra passes to every {found.kind} "
                                     f"({', '.join(passed)}, then its options)", found, key)
            raise ComponentError(found.option_problem(key) or f"{found.label} does not accept '{key}'", found, key)
    raise ComponentError(f"{found.label} cannot be built with the arguments a {found.kind} gets "
                         f"({', '.join(passed) or 'its options'}): {why}", found)


# ---------------------------------------------------------------------------------------
# Which component built a module
# ---------------------------------------------------------------------------------------
def tag(module: nn.Module, found: Component) -> None:
    """Record on `module` that `found`'s factory built it (read by `built_by`)."""
    setattr(module, _TAG, (*getattr(module, _TAG, ()), found))


def built_by(module: nn.Module) -> tuple[Component, ...]:
    """The components whose factories built `module` itself (empty if `create` did not build it)."""
    return getattr(module, _TAG, ())


def compile_unsafe(module: nn.Module) -> list[Component]:
    """The components inside `module` (built by `create`) that declared ``compile_safe=False``."""
    seen = {c.key: c for m in module.modules() for c in built_by(m)}
    return [c for _, c in sorted(seen.items()) if not c.compile_safe]
