"""The component registry: the one way blocks are found, for built-ins and plugins alike.

A component is an `nn.Module` factory (an `nn.Module` subclass, or a function returning a
module) stored under a name within a kind:

    from lyra import registry

    @registry.register("activation", "snake")
    class Snake(nn.Module): ...

    registry.get("activation", "snake")     # -> the class
    registry.create("activation", "snake", channels=128)

Lookup order: already registered -> the installed plugins of the ``lyra.plugins`` entry-point
group, loaded once on the first miss (never at import) -> a `LyraError` listing what exists,
the closest name, and which plugins were loaded or failed. ``LYRA_DISABLE_PLUGIN_AUTOLOAD=1``
turns autoloading off.

A plugin is an entry point of that group in another installed package. It names either a
function ``register(registry)`` that registers the plugin's components (preferred), or a
module whose import registers them with the decorator above. While a plugin loads, what it
registers is attributed to it (entry-point name and distribution, recorded in checkpoints).
A plugin that fails -- raises on import, takes a name already registered, registers
something that is not an `nn.Module` factory -- is rolled back whole and recorded with a
one-line error naming it; the other plugins and the built-ins keep working, and the error
is shown where it matters: in the unknown-name error, in `lyra plugins`, and as a warning
when a name it contested is used. A plugin cannot replace a registered name, even with
``override=True``: plugins load lazily, so the result would depend on what triggered loading.

Options. A factory is called with the arguments Lyra passes to its kind (`ARGUMENTS`, e.g.
``channels`` for an activation) as keywords; every other keyword parameter it names is an
*option*, set per component in a config (``[model.options.<name>]``, keyed by component name).
While a model is built (`component_options`), `create` adds the options configured for a name
to every call that builds that name, wherever in the model it is built, so a block never
passes its children's options down. Each call is checked against the factory's signature
first: an argument or option it does not take is a one-line `ComponentError` naming the
component and the key, never a bare ``TypeError``. A factory that rejects an option's value
raises ``OptionError(key, why)``; `create` reports it naming the component and the key. A
``**kwargs`` parameter takes no options; it only receives the deprecated flat
``[model] block_options``, which the built-in blocks pass down to every component.

``compile_safe`` declares whether `torch.compile` may trace a component. `create` records on
each module it builds which component built it, and `compile_unsafe(module)` lists the
components inside a module that declared ``compile_safe=False``; `VAE.compile` leaves the
stages holding one eager.

``streamable`` declares that a component mixes time only through the ``nn.Conv1d`` /
``nn.ConvTranspose1d`` layers it holds and is otherwise local in time (pointwise, or a fixed
whole-step resampling such as zero-stuffing): `lyra.streaming` sizes its chunk overlap from
those layers and refuses a model holding anything it cannot vouch for. It defaults to False,
so a plugin block that normalises over time or calls ``F.conv1d`` is refused, not streamed
wrongly.

Kinds: ``activation``, ``residual_unit``, ``encoder_block`` and ``decoder_block`` build the
VAE (constructor signatures in `lyra.blocks`); ``discriminator`` builds the critics of
adversarial training, outside the VAE (contract in `lyra.discriminators`):

    factory(channels: int, sample_rate: int, **options) -> nn.Module
    forward(x: Tensor[B, C, T]) -> list[tuple[Tensor, list[Tensor]]]

one ``(logits, feature_maps)`` pair per sub-discriminator: logits of any shape ``[B, ...]``,
feature maps the intermediate activations used for feature matching (`lyra.adversarial`).
A discriminator is never streamed, so ``streamable`` does not apply to it.

The built-in components live in `lyra.blocks` and `lyra.discriminators` and register
themselves exactly the way a plugin does; they are imported lazily, on the first lookup,
like plugins.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import importlib
import inspect
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

from torch import nn

from lyra.errors import LyraError

ENTRY_POINT_GROUP = "lyra.plugins"
AUTOLOAD_ENV = "LYRA_DISABLE_PLUGIN_AUTOLOAD"

KINDS = ("activation", "residual_unit", "encoder_block", "decoder_block", "discriminator")
BUILTIN_MODULES = ("lyra.blocks", "lyra.discriminators")
BUILTIN_PROVIDER = "lyra"
_TAG = "_lyra_components"  # attribute `create` sets on the modules it builds

# The keyword arguments Lyra passes to each kind's factory (the constructor signatures are in
# `lyra.blocks` and `lyra.discriminators`). Any other keyword parameter a factory names is an
# option of that component.
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "activation": ("channels",),
    "residual_unit": ("channels", "dilation", "kernel_size", "activation"),
    "encoder_block": ("in_channels", "out_channels", "stride", "dilations", "kernel_size", "activation",
                      "residual_unit"),
    "decoder_block": ("in_channels", "out_channels", "stride", "dilations", "kernel_size", "activation",
                      "residual_unit"),
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
        sig = _signature(self.factory)
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
            _check_factory(kind, name, obj)
            taken = self.components.get(kind, {}).get(name)
            if taken is not None and taken.factory is obj and not override:
                return obj
            if taken is not None and (self._loading is not None or not override):
                fix = ("a plugin cannot replace a registered component; choose another name"
                       if self._loading is not None else "pass override=True to replace it")
                raise NameTakenError(f"{kind} '{name}' is already registered by {taken.origin}; {fix}",
                                     f"{kind}/{name}")
            plugin = self._loading
            who = provider or (plugin.distribution if plugin else None) or _module_provider(obj)
            self.components.setdefault(kind, {})[name] = Component(
                kind, name, obj, who, compile_safe, plugin.name if plugin else None, streamable
            )
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
        scope = _SCOPE.get()
        if scope is not None:
            scope.built.add(name)
            kwargs = {**kwargs, **scope.options.get(name, {})}
        _check_call(found, args, kwargs)
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
        setattr(module, _TAG, (*getattr(module, _TAG, ()), found))  # read by `compile_unsafe`
        return module

    def named(self, name: str) -> list[Component]:
        """Every component registered as `name`, of any kind (loading plugins on a miss);
        a `LyraError` like `component`'s when there is none."""
        self._ensure_builtins()
        found = [entries[name] for entries in self.components.values() if name in entries]
        if not found and not self.plugins_loaded and not _autoload_disabled():
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
        if load_plugins and not self.plugins_loaded and not _autoload_disabled():
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
        from importlib import metadata  # scanning installed packages costs time: only here

        self._ensure_builtins()  # so a plugin taking a built-in's name is caught
        self.plugins_loaded = True
        by_name = {p.name: p for p in self.plugins}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
            dist = getattr(ep, "dist", None)
            record = Plugin(ep.name, ep.value, dist.name if dist else "unknown package",
                            dist.version if dist else "")
            if ep.name in by_name:
                record = replace(record, error=f"entry-point name '{ep.name}' is already used by "
                                               f"{by_name[ep.name].label}")
            else:
                record = self._load_plugin(ep, record)
            by_name.setdefault(ep.name, record)
            self.plugins.append(record)

    def _load_plugin(self, ep: Any, record: Plugin) -> Plugin:
        """Run one plugin; on any failure undo what it registered and return the error."""
        before = {kind: dict(entries) for kind, entries in self.components.items()}
        self._loading = record
        try:
            obj = ep.load()
            if inspect.ismodule(obj):
                pass  # importing it registered its components
            elif callable(obj) and not isinstance(obj, type):
                obj(self)  # a `register(registry)` hook
            else:
                raise LyraError(f"entry point '{ep.value}' is a {type(obj).__name__}; it must name "
                                "a module or a register(registry) function")
        except Exception as exc:  # a broken plugin must not break the others
            self.components = before
            return replace(record, error=_one_line(exc), contested=exc.key if isinstance(exc, NameTakenError) else None)
        finally:
            self._loading = None
        added = sorted(f"{kind}/{name}" for kind, entries in self.components.items()
                       for name in entries if name not in before.get(kind, {}))
        return replace(record, components=tuple(added))

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
        if not self.plugins_loaded and _autoload_disabled():
            msg += f"; plugin autoloading is off ({AUTOLOAD_ENV}=1)"
        else:
            msg += f"; plugins loaded: {', '.join(self.loaded_plugins) or 'none'}"
        if self.failed_plugins:
            bad = "; ".join(f"{p.label}: {p.error}" for p in self.failed_plugins)
            msg += f"; plugins that failed to load: {bad}"
        return msg


def _check_factory(kind: str, name: str, obj: Any) -> None:
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


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
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


def _check_call(found: Component, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`found`'s factory takes these arguments, or a `ComponentError` says which one it does not."""
    sig = _signature(found.factory)
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, LyraError):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip() not in ("", "0")


def autoload_disabled() -> bool:
    """Whether ``LYRA_DISABLE_PLUGIN_AUTOLOAD`` turns plugin autoloading off."""
    return _autoload_disabled()


def _module_provider(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    top = module.split(".")[0]
    if top in ("lyra", "lyra_kernels"):
        return BUILTIN_PROVIDER
    from importlib import metadata

    dists = metadata.packages_distributions().get(top)
    return dists[0] if dists else (top or "unknown")


def compile_unsafe(module: nn.Module) -> list[Component]:
    """The components inside `module` (built by `create`) that declared ``compile_safe=False``."""
    seen = {c.key: c for m in module.modules() for c in built_by(m)}
    return [c for _, c in sorted(seen.items()) if not c.compile_safe]


def built_by(module: nn.Module) -> tuple[Component, ...]:
    """The components whose factories built `module` itself (empty if `create` did not build it)."""
    return getattr(module, _TAG, ())


# The process-wide registry. Module-level functions below are the public interface.
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
