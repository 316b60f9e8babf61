"""Helpers shared by the sub-command modules: config loading and turning errors into messages."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from geosleuth.config import Config, load_config
from geosleuth.errors import DegradedResultsError, GeosleuthError, StageUnavailableError

if TYPE_CHECKING:
    from geosleuth.api import Geolocator

T = TypeVar("T")

# Exit codes (README "Exit codes" and each command's --help list them).
EXIT_PARTIAL_FAILURE = 1  # the job ran, but some images got no location (or raised)
EXIT_USAGE = 2  # usage, configuration or input error: nothing (more) was run
EXIT_DEGRADED = 3  # answers were given, but some lack a required stage (see --allow-degraded)
EXIT_STAGE_UNAVAILABLE = 4  # a required stage is down: preflight failed, or the circuit breaker stopped the run
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = (
    "Exit codes: 0 all answers complete; 1 some images got no location; 2 usage, configuration or "
    "input error; 3 some answers are degraded (a required stage such as the VLM was missing; "
    "--allow-degraded accepts them); 4 a required stage is unavailable (the preflight request failed, "
    "or the circuit breaker stopped the run; finished results are kept); 130 interrupted."
)


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
    """Print geosleuth's own errors as one readable line and exit 2 (4 for a required stage that
    is unavailable, 3 for results too degraded to report), instead of a traceback."""
    try:
        yield
    except GeosleuthError as exc:
        # Text, not markup: paths and model text may contain "[" that rich would eat.
        err_console().print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        code = (EXIT_STAGE_UNAVAILABLE if isinstance(exc, StageUnavailableError)
                else EXIT_DEGRADED if isinstance(exc, DegradedResultsError) else EXIT_USAGE)
        raise typer.Exit(code) from None


def warn_if_tools_fell_back(geo: Geolocator, console: Console) -> None:
    """After the preflight: say once that agent.mode=tools runs as the fixed pipeline, and why."""
    if geo.tools_fallback:
        from geosleuth.agent.toolloop.fallback import fallback_note

        console.print(Text.assemble(("warning: ", "bold yellow"), fallback_note(geo.tools_fallback)), highlight=False)


def run_guarded(fn: Callable[[], T]) -> T:
    with user_errors():
        return fn()


def is_tty() -> bool:
    return sys.stdout.isatty()


def open_geolocator(ctx: typer.Context) -> Geolocator:
    """The commands' Geolocator for the effective configuration (models load on first use).
    Call it as ``common.open_geolocator`` so tests can hand the commands a double."""
    from geosleuth.api import Geolocator

    return Geolocator.from_config(state(ctx).config())


class EngineChoice(str, Enum):
    """Where ``batch`` and ``index build`` run: this process, or a Ray cluster (docs/ray.md)."""

    local = "local"
    ray = "ray"
