"""`LyraTyper`: the Typer app every `lyra` command is registered on.

It differs from a plain `typer.Typer` in three ways:

- each command runs `guarded` (`lyra.cli.exits`): errors are one line, signals and a closed
  stdout end it with the documented status;
- help is plain text (``rich_markup_mode=None``): square brackets in help (``[model]``) are
  text, flags show no ``<bool>``, and the output does not depend on whether rich is installed;
- usage lines name arguments as click always did, ``IN OUT`` and ``[DEGRADED]`` (typer 0.29
  writes required arguments as ``{IN}``).

Docstrings are wrapped as paragraphs; a paragraph that follows a line holding only ``\\b``
(click's marker) keeps its line breaks, as the commands' examples do.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import typer
from typer.core import TyperCommand

from lyra.cli.exits import guarded


class UsageCommand(TyperCommand):
    """A command whose usage line reads ``lyra encode [OPTIONS] IN OUT``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", None) != "argument" or getattr(param, "hidden", False):
                continue
            name = param.metavar or param.name.upper()
            if not param.required:
                name = f"[{name}]"
            pieces.append(name if param.nargs == 1 else f"{name}...")
        return pieces


class LyraTyper(typer.Typer):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("rich_markup_mode", None)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def command(self, name: Optional[str] = None, *, cls: Optional[type] = None,
                graceful_signals: bool = False, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a command (see `typer.Typer.command`). `graceful_signals`: the command
        handles SIGINT/SIGTERM itself and must not be stopped at once (training)."""
        register = super().command(name, cls=cls or UsageCommand, **kwargs)

        def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
            register(guarded(function, graceful_signals))
            return function

        return decorator
