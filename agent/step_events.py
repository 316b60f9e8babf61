"""Trace events of the locate graph's steps, and the reason step's outputs and failures in them
(shared by the fixed pipeline's reason node and the tool loop's)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from geosleuth.types import ReasoningResult, StepFailure, TraceEvent

# Trace outputs quote at most this many failure messages of one step.
_MAX_QUOTED_ERRORS = 3


def step_event(
    state: Mapping[str, Any], step: str, started: float, inputs: dict[str, Any], outputs: dict[str, Any],
    error: str | None = None,
) -> TraceEvent:
    """The TraceEvent of a step of the run whose state is ``state`` (its ``clock``), started at ``started``
    (``time.perf_counter()``) and ending now."""
    return timed_event(state["clock"], step, started, inputs, outputs, error)


def timed_event(
    clock: tuple[float, float], step: str, started: float, inputs: dict[str, Any], outputs: dict[str, Any],
    error: str | None = None,
) -> TraceEvent:
    """A TraceEvent from ``started`` until now; ``clock`` is the run's (unix time, perf_counter) at its
    start, so event times are monotonic."""
    wall0, perf0 = clock
    now = time.perf_counter()
    return TraceEvent(
        step=step,
        started_at=wall0 + (started - perf0),
        duration_s=round(now - started, 6),
        inputs=inputs,
        outputs=outputs,
        error=error,
    )


def reasoning_outputs(reasoning: ReasoningResult) -> dict[str, Any]:
    return {
        "hypotheses": [h.model_dump(mode="json") for h in reasoning.hypotheses],
        "abstentions": [a.model_dump(mode="json") for a in reasoning.abstentions],
        "failures": [f.model_dump(mode="json") for f in reasoning.failures],
        "raw_replies": list(reasoning.raw_replies),
        "prompts": [p.model_dump(mode="json", exclude={"rendered"}) for p in reasoning.prompts],
    }


def reasoning_failures(reasoning: ReasoningResult) -> list[StepFailure]:
    """One StepFailure summarising unusable VLM replies (none when every reply was usable)."""
    failed = len(reasoning.failures)
    if not failed:
        return []
    total = failed + len(reasoning.hypotheses)
    quoted = "; ".join(dict.fromkeys(f.error for f in reasoning.failures[:_MAX_QUOTED_ERRORS]))
    if reasoning.hypotheses:
        error = f"{failed} of {total} VLM replies were unusable ({quoted})"
    else:
        error = f"no usable VLM answer: all {total} replies failed ({quoted}); answered from retrieval only"
    return [StepFailure(step="reason", error=error)]
