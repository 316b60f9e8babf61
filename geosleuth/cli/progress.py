"""Progress on the terminal while a photo is located: the step in progress, the VLM's tokens so far
and its speed, and how long it may still take.

Fed by the items of ``Geolocator.astream(..., progress=True)``: ``("progress", {"progress":
ProgressEvent})`` while a step runs, ``(step, {"event": TraceEvent})`` when it has finished. The time
left is measured, never guessed: tokens still allowed (the token budget, an upper bound: answers
usually stop sooner) at the speed measured so far in this step, so it reads "at most".
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.text import Text

from geosleuth.agent.graph import STEPS
from geosleuth.types import ProgressEvent, TraceEvent


def describe(event: ProgressEvent) -> str:
    """One line for a progress event, e.g. ``reason: 120 tokens at 14.8 tokens/s, at most 12 s left``."""
    if event.state == "started":
        return f"{event.step} ..."
    if event.state == "finished":
        outcome = f"failed ({event.error})" if event.error else "done"
        return f"{event.step} {outcome} in {event.elapsed_s:.1f} s"
    tokens = event.tokens or 0
    line = f"{event.step}: {tokens} tokens"
    if tokens and event.elapsed_s > 0:
        rate = tokens / event.elapsed_s
        line += f" at {rate:.1f} tokens/s"
        if event.token_budget is not None and event.token_budget > tokens:
            line += f", at most {(event.token_budget - tokens) / rate:.0f} s left"
    return line


class LocateProgress:
    """A status line on ``console`` (normally stderr) for one photo, plus one line per finished step."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self._status: Any = None

    def __enter__(self) -> LocateProgress:
        self._status = self.console.status(Text(f"{self.label} ..."))
        self._status.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.__exit__(exc_type, exc, tb)
            self._status = None

    def feed(self, step: str, update: dict[str, Any]) -> None:
        """Show one ``astream`` item (``done`` is left to the caller)."""
        if step == "done":
            return
        if step == "progress":
            event = update.get("progress")
            if isinstance(event, ProgressEvent) and event.state != "finished" and self._status is not None:
                self._status.update(Text(f"{self.label}: {describe(event)}"))
            return
        event = update.get("event")
        took = f" {event.duration_s:.2f} s" if event is not None else ""
        failed = event is not None and event.error
        self.console.print(
            f"  [dim]{step}[/]{took}" + ("  [yellow](failed, continuing)[/]" if failed else ""), highlight=False
        )
        if self._status is not None:
            following = STEPS[STEPS.index(step) + 1] if step in STEPS[:-1] else None
            self._status.update(Text(f"{self.label}: {step} done" + (f", {following} ..." if following else "")))

    async def on_step(self, step: str, event: TraceEvent | None) -> None:
        """The ``on_step`` callback of ``LocatePipeline.run`` / chat turns (finished steps only)."""
        self.feed(step, {"event": event})
