"""The circuit breaker: stop a run when a required stage keeps failing, instead of writing a whole
results file of degraded answers.

It opens after ``consecutive`` failures of the same kind in a row (default 3), or when more than
``max_share`` of the last ``window`` recorded outcomes were failures. A kind is what failed, e.g.
``"missing vlm"``; ``None`` is a healthy outcome. Plain, synchronous and engine-neutral: the local
engine and the Ray engine feed it the same outcomes.
"""

from __future__ import annotations

from collections import deque

from geosleuth.types import Prediction

DEFAULT_CONSECUTIVE = 3
DEFAULT_WINDOW = 20
DEFAULT_MAX_SHARE = 0.5


def failure_kind(prediction: Prediction) -> str | None:
    """The breaker's view of a prediction: ``"missing <stages>"`` when a required stage gave
    nothing (degraded, or failed for want of it), ``None`` otherwise."""
    if not prediction.missing_stages:
        return None
    return "missing " + ", ".join(sorted(prediction.missing_stages))


class CircuitBreaker:
    """``record(kind)`` after each finished image; ``tripped`` once the stage looks down, with
    ``reason`` saying why."""

    def __init__(
        self, consecutive: int = DEFAULT_CONSECUTIVE, *, window: int = DEFAULT_WINDOW,
        max_share: float = DEFAULT_MAX_SHARE,
    ) -> None:
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {consecutive}")
        if window < 1 or not 0.0 < max_share <= 1.0:
            raise ValueError(f"need window >= 1 and 0 < max_share <= 1, got {window} and {max_share}")
        self.consecutive = consecutive
        self.window = window
        self.max_share = max_share
        self._recent: deque[bool] = deque(maxlen=window)
        self._streak_kind: str | None = None
        self._streak = 0
        self.tripped = False
        self.reason: str | None = None

    @property
    def streak(self) -> int:
        """Failures of the current kind in a row."""
        return self._streak

    @property
    def streak_kind(self) -> str | None:
        return self._streak_kind

    def record(self, kind: str | None) -> None:
        """One finished image: ``kind`` of failure, or ``None`` when it was healthy."""
        self._recent.append(kind is not None)
        if kind is None:
            self._streak_kind, self._streak = None, 0
        elif kind == self._streak_kind:
            self._streak += 1
        else:
            self._streak_kind, self._streak = kind, 1
        if self.tripped:
            return
        if kind is not None and self._streak >= self.consecutive:
            self.tripped = True
            self.reason = f"{self._streak} images in a row came back with {kind}"
        elif len(self._recent) == self.window and sum(self._recent) > self.max_share * self.window:
            self.tripped = True
            self.reason = (
                f"{sum(self._recent)} of the last {self.window} images had a required stage missing "
                f"(more than {self.max_share:.0%}); the latest: {kind or 'healthy'}"
            )
