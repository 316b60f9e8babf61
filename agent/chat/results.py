"""What the chat hands to its callers (CLI, web app, Python): typed, JSON-serialisable objects.

``model_dump(mode="json")`` gives what a web server sends; nothing here holds pixels or models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.constraints import Constraint
from geosleuth.types import Prediction, RunSummary, Trace

ReplyKind = Literal["located", "resumed", "answer", "relocated", "not-understood", "no-vlm"]


class _ChatRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatTurn(_ChatRecord):
    """One turn of a session's history."""

    user: str | None  # None for the opening locate
    reply: str
    kind: ReplyKind


class ChatTurnResult(_ChatRecord):
    """One turn's answer.

    ``kind``: ``located`` (the opening locate), ``relocated`` (a hint was applied and the image
    located again), ``answer`` (the VLM answered a question), ``resumed`` (where a resumed session
    stands), ``not-understood`` (a place the parser does not know; nothing changed), ``no-vlm``
    (a question, but no VLM is configured). ``prediction``/``trace``/``summary`` are set when this
    turn (re)located the image (``prediction`` also for ``resumed``).
    """

    session_id: str
    kind: ReplyKind
    text: str
    prediction: Prediction | None = None
    trace: Trace | None = None
    summary: RunSummary | None = None
    constraints: list[Constraint] = Field(default_factory=list)  # the hints active after this turn
    # How the turn went besides its answer, e.g. "3 of 4 earlier VLM answers contradict the hints:
    # asked the VLM again, with the hints" (also at the end of ``text``).
    notes: list[str] = Field(default_factory=list)


class ChatSessionInfo(_ChatRecord):
    """A stored session, as listed by :meth:`ChatEngine.list_sessions`."""

    session_id: str
    image_path: str
    created_at: float  # unix time, seconds
    updated_at: float
    turns: int
    answer: str | None = None  # the latest answer's place, e.g. "Europe > Portugal > Porto"
    constraints: list[str] = Field(default_factory=list)  # active hints, as labels


# The name this type had before the chat became a package.
ChatReply = ChatTurnResult
