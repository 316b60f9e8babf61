"""Helpers shared by the sub-command modules: config loading and turning errors into messages."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.text import Text

from geosleuth.config import Config, load_config
from geosleuth.errors import GeosleuthError

T = TypeVar("T")

# Exit codes: 1 = the job ran but some inputs failed; 2 = usage/config/input error.
EXIT_PARTIAL_FAILURE = 1
EXIT_USAGE = 2


@dataclass
class CLIState:
    config_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    _config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            with user_errors():
                self._config = load_config(self.config_path, self.overrides)
        return self._config


def state(ctx: typer.Context) -> CLIState:
    """The root command's state (also works when a sub-command is invoked without the root callback)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CLIState):
        root.obj = CLIState()
    return root.obj


def err_console() -> Console:
    return Console(stderr=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print geosleuth's own errors as one readable line and exit 2, instead of a traceback."""
    try:
        yield
    except GeosleuthError as exc:
        # Text, not markup: paths and model text may contain "[" that rich would eat.
        err_console().print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def run_guarded(fn: Callable[[], T]) -> T:
    with user_errors():
        return fn()


def is_tty() -> bool:
    return sys.stdout.isatty()
