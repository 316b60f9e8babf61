"""The tool loop's state and budgets.

The state is a TypedDict (LangGraph's convention); ``events`` accumulate (one TraceEvent per model
turn and per tool call), the rest is rewritten by the node that owns it. The budgets are hard: when
one is spent the loop ends, and ``stop_reason`` names it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, TypedDict

# Runtime imports: LangGraph reads the state's type hints.
from geosleuth.types import Abstention, Candidate, Hypothesis, TraceEvent
from geosleuth.vlm.backends import ChatMessage, ToolCall

if TYPE_CHECKING:
    from geosleuth.config import AgentConfig

# stop_reason values (also in the trace)
STOP_SUBMITTED = "submitted"
STOP_TOOL_CALLS = "budget: tool calls"
STOP_TOKENS = "budget: tokens"
STOP_SECONDS = "budget: wall time"
STOP_VLM_ERROR = "vlm request failed"


@dataclass(frozen=True)
class Budget:
    """Hard limits for one photo's loop."""

    max_tool_calls: int
    max_tokens: int
    max_seconds: float

    @classmethod
    def from_config(cls, config: AgentConfig) -> Budget:
        return cls(config.max_tool_calls, config.max_tokens, config.max_seconds)


class ToolLoopState(TypedDict, total=False):
    messages: list[ChatMessage]  # the conversation so far (rewritten whole by each node)
    pending: list[ToolCall]  # calls of the last model turn not yet run
    tool_calls: int  # calls run (failed ones included)
    tokens: int  # tokens generated over every turn
    turns: int  # model turns
    started: float  # perf_counter at the start (wall-time budget)
    answer: Hypothesis | Abstention | None  # what submit gave
    candidates: list[Candidate]  # locations the tools proposed (the fusion judges them)
    stop_reason: str | None
    error: str | None  # the VLM request error that ended the loop, if any
    raw_replies: Annotated[list[str], operator.add]
    events: Annotated[list[TraceEvent], operator.add]
