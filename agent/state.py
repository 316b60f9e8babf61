"""The locate graph's state (user constraints live in :mod:`geosleuth.constraints`).

The state is a TypedDict (LangGraph's convention): each node reads what it needs and returns only
the keys it produces. ``events`` and ``failures`` accumulate (one TraceEvent per node; every
step's failures); everything else is written by exactly one node.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from PIL import Image

from geosleuth.constraints import Constraint
from geosleuth.index.encoders import ImageEmbeddings
from geosleuth.types import (
    Candidate,
    FusionEvidence,
    ImageRef,
    Prediction,
    ReasoningResult,
    RetrievalResult,
    StepFailure,
    TextEvidence,
    TraceEvent,
)


class LocateState(TypedDict, total=False):
    """What flows through the locate graph (perceive -> retrieve -> reason -> verify -> decide)."""

    # inputs
    trace_id: str
    clock: tuple[float, float]  # (unix time, perf_counter) at the start: monotonic event times
    image_path: str
    constraints: list[Constraint]
    top_k: int
    exclude_ids: list[str]
    exclude_authors: list[str]
    prior_reasoning: ReasoningResult | None  # an earlier run's answers (chat), reused when they still fit
    hint: str | None  # what the user told us, shown to the VLM when it is asked (see agent.reason.reason)
    # perceive
    image: Image.Image
    image_ref: ImageRef
    embeddings: ImageEmbeddings
    text: TextEvidence | None  # what the text in the photo says (None: OCR off)
    # retrieve
    retrieval: RetrievalResult
    # reason
    reasoning: ReasoningResult | None
    proposed: list[Candidate]  # agent.mode=tools: locations the VLM's tool calls proposed (fusion judges them)
    # verify
    ranked: list[Candidate]
    rejected: list[Candidate]
    evidence: FusionEvidence | None
    # decide
    prediction: Prediction
    # every node
    events: Annotated[list[TraceEvent], operator.add]
    failures: Annotated[list[StepFailure], operator.add]


def initial_state(
    image_path: str,
    *,
    trace_id: str,
    clock: tuple[float, float],
    constraints: Sequence[Constraint] = (),
    top_k: int,
    exclude_ids: Sequence[str] = (),
    exclude_authors: Sequence[str] = (),
    prior_reasoning: ReasoningResult | None = None,
    hint: str | None = None,
) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "clock": clock,
        "image_path": image_path,
        "prior_reasoning": prior_reasoning,
        "hint": hint,
        "constraints": list(constraints),
        "top_k": top_k,
        "exclude_ids": list(exclude_ids),
        "exclude_authors": list(exclude_authors),
        "events": [],
        "failures": [],
    }
