"""What a batch run did: counts by status (this run and lines already in the file), and why it stopped.

Shared by every engine; no event loop here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geosleuth.errors import GeosleuthError

if TYPE_CHECKING:
    from .results import BatchResult


@dataclass
class BatchSummary:
    """Counts over the whole results file. ``counts``: this run's lines by status (ok / degraded /
    failed / error); ``previous``: lines that were there before this run, by status."""

    out_path: Path
    total: int = 0  # images in the input
    previously_done: int = 0  # skipped because the results file already had them
    counts: Counter[str] = field(default_factory=Counter)
    previous: Counter[str] = field(default_factory=Counter)
    truncated_partial_line: bool = False  # resume found and removed a half-written last line
    retried: Counter[str] = field(default_factory=Counter)  # old lines removed to be re-run, by status
    error_types: Counter[str] = field(default_factory=Counter)
    # this run: predictions in which a step failed (e.g. "reason": some VLM replies were unusable)
    step_failures: Counter[str] = field(default_factory=Counter)
    missing_stages: Counter[str] = field(default_factory=Counter)  # this run, over degraded/failed predictions
    elapsed_s: float = 0.0
    interrupted: bool = False
    aborted: str | None = None  # why the run stopped early (a fatal, not per-image, error)
    circuit_open: str | None = None  # the circuit breaker's reason, when it stopped the run
    discarded_degraded: int = 0  # degraded results not written because the breaker stopped the run

    @property
    def ok(self) -> int:
        """This run: predictions every required stage contributed to."""
        return self.counts["ok"]

    @property
    def degraded(self) -> int:
        """This run: predictions with a coordinate but a required stage missing."""
        return self.counts["degraded"]

    @property
    def no_coordinate(self) -> int:
        """This run: predictions without a coordinate (``failure_reason`` says why)."""
        return self.counts["failed"]

    @property
    def errors(self) -> int:
        """This run: images the locate function raised on."""
        return self.counts["error"]

    @property
    def located(self) -> int:
        """This run: predictions with a coordinate (ok or degraded)."""
        return self.ok + self.degraded

    @property
    def done_this_run(self) -> int:
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        return self.total - self.previously_done - self.done_this_run

    @property
    def previous_failed(self) -> int:
        """Lines already in the file (for this input) without a coordinate (either kind)."""
        return self.previous["failed"] + self.previous["error"]

    @property
    def failed(self) -> int:
        """Images in the results file without a coordinate (this run and before)."""
        return self.no_coordinate + self.errors + self.previous_failed

    @property
    def degraded_total(self) -> int:
        """Degraded lines in the results file (this run and before)."""
        return self.degraded + self.previous["degraded"]

    @property
    def images_per_s(self) -> float:
        return self.done_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, result: BatchResult) -> None:
        """Count one line that is now on disk."""
        self.counts[result.status] += 1
        if result.prediction is None:
            self.error_types[result.error_type or "Exception"] += 1
            return
        self.step_failures.update({failure.step for failure in result.prediction.failures})
        self.missing_stages.update(result.prediction.missing_stages)


class BatchStopped(GeosleuthError):
    """The run stopped before every image was done; ``summary`` says how far it got."""

    def __init__(self, message: str, summary: BatchSummary) -> None:
        super().__init__(message)
        self.summary = summary


class BatchInterrupted(BatchStopped):
    """Ctrl-C / cancellation: the images finished so far are in the results file."""


class BatchAborted(BatchStopped):
    """A fatal (environment, not per-image) error stopped the run."""


class BatchCircuitOpen(BatchStopped):
    """A required stage (the VLM server, a gallery) kept failing, so the circuit breaker stopped the
    run: finished images are kept, images in flight were not written; resume once it is back."""
