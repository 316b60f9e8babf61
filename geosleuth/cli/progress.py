"""Progress on the terminal while a photo is located: the step in progress, the VLM's tokens so far
and its speed, and how long it may still take.

Fed by the items of ``Geolocator.astream(..., progress=True)`` (``locate``): ``("progress", {"progress":
ProgressEvent})`` while a step runs, ``(step, {"event": TraceEvent})`` when it has finished; or, in
``chat``, by the ``on_progress`` and ``on_step`` callbacks of a turn. The time
left is measured, never guessed: tokens still allowed (the token budget, an upper bound: answers
usually stop sooner) at the speed measured so far in this step, so it reads "at most".
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.text import Text

from geosleuth.agent.graph import STEPS
from geosleuth.agent.progress import describe
from geosleuth.types import ProgressEvent, TraceEvent


class LocateProgress:
    """A status line on ``console`` (normally stderr) for one photo, plus one line per finished step."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.line = f"{label} ..."  # what the status line shows now
        self._status: Any = None

    def __enter__(self) -> LocateProgress:
        self._status = self.console.status(Text(self.line))
        self._status.__enter__()
        return self

    def _show(self, line: str) -> None:
        self.line = line
        if self._status is not None:
            self._status.update(Text(line))

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
                self._show(f"{self.label}: {describe(event)}")
            return
        event = update.get("event")
        took = f" {event.duration_s:.2f} s" if event is not None else ""
        failed = event is not None and event.error
        self.console.print(
            f"  [dim]{step}[/]{took}" + ("  [yellow](failed, continuing)[/]" if failed else ""), highlight=False
        )
        if self._status is not None:
            following = STEPS[STEPS.index(step) + 1] if step in STEPS[:-1] else None
            self._show(f"{self.label}: {step} done" + (f", {following} ..." if following else ""))

    async def on_step(self, step: str, event: TraceEvent | None) -> None:
        """The ``on_step`` callback of ``LocatePipeline.run`` / chat turns (finished steps only)."""
        self.feed(step, {"event": event})

    async def on_progress(self, event: ProgressEvent) -> None:
        """The ``on_progress`` callback of ``LocatePipeline.run`` / chat turns (the step in progress)."""
        self.feed("progress", {"progress": event})
