"""The web app's one adapter over the chat engine (:class:`geosleuth.agent.chat.ChatEngine`).

Everything the app needs from chat goes through :class:`ChatSessions`, so a change in the chat
engine's API is adapted here only. Sessions live in the same SQLite store as ``geosleuth chat``
(``<index.cache_dir>/chat_sessions.sqlite`` by default): a session started in the browser resumes
with ``geosleuth chat --resume ID`` and the other way round.

Steps stream as they run: every turn that locates (the opening one, and a hint's re-locate) reports
the step in progress (with the VLM's tokens so far, its speed and at most how long it may still
take) through the engine's ``on_progress``, and each finished step through its ``on_step``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geosleuth.agent.chat import ChatEngine
from geosleuth.agent.progress import describe
from geosleuth.constraints import Constraint
from geosleuth.types import Prediction, ProgressEvent, Trace, TraceEvent

if TYPE_CHECKING:
    from geosleuth.agent.graph import ProgressCallback, StepCallback
    from geosleuth.api import Geolocator

# How many sessions the list shows (most recently active first).
MAX_LISTED_SESSIONS = 50


@dataclass(frozen=True)
class StepReport:
    """One pipeline step that finished: its name, wall time, error if any, and a one-line summary."""

    step: str
    duration_s: float | None
    error: str | None = None
    summary: str = ""


@dataclass(frozen=True)
class LiveReport:
    """The step in progress: ``state`` started or generating, seconds so far, the VLM's tokens so far
    and the most it may write (None outside VLM calls), and the line to show (speed, time left)."""

    step: str
    state: str
    elapsed_s: float
    tokens: int | None
    token_budget: int | None
    text: str


StepListener = Callable[[StepReport | LiveReport], Awaitable[None]]


@dataclass(frozen=True)
class Turn:
    user: str | None
    reply: str
    kind: str


@dataclass
class SessionState:
    """Where a session stands: its image, latest prediction and trace, hints, and the conversation."""

    session_id: str
    image_path: str
    prediction: Prediction | None
    trace: Trace | None
    constraints: list[Constraint] = field(default_factory=list)
    history: list[Turn] = field(default_factory=list)


@dataclass(frozen=True)
class TurnResult:
    kind: str  # located | resumed | answer | relocated | not-understood | no-vlm
    text: str
    state: SessionState


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    image_path: str
    place: str | None
    updated_at: float | None  # unix time, seconds
    turns: int


def _summary(event: TraceEvent | None) -> str:
    """One line on what a step produced (from its trace event: this is a progress display)."""
    if event is None:
        return ""
    out = event.outputs

    def count(key: str) -> int:
        return len(out.get(key) or [])

    if event.step == "retrieve":
        return f"{count('neighbors')} gallery neighbours, {count('gps_candidates')} GPS candidates"
    if event.step == "reason":
        if "skipped" in out:
            return str(out["skipped"])
        reused = " (earlier answers reused)" if out.get("reused_earlier_answers") else ""
        return f"{count('hypotheses')} usable VLM answers, {count('failures')} unusable{reused}"
    if event.step == "verify":
        return f"{count('candidates')} candidates ranked"
    if event.step == "decide":
        return "no coordinate" if out.get("lat") is None else f"{out['lat']:.4f}, {out['lon']:.4f}"
    return ""


def _on_step(listener: StepListener | None) -> StepCallback | None:
    if listener is None:
        return None

    async def on_step(step: str, event: TraceEvent | None) -> None:
        await listener(StepReport(step=step, duration_s=event.duration_s if event is not None else None,
                                  error=event.error if event is not None else None, summary=_summary(event)))

    return on_step


def _on_progress(listener: StepListener | None) -> ProgressCallback | None:
    if listener is None:
        return None

    async def on_progress(event: ProgressEvent) -> None:
        if event.state == "finished":  # the finished step comes with its summary through on_step
            return
        await listener(LiveReport(step=event.step, state=event.state, elapsed_s=event.elapsed_s,
                                  tokens=event.tokens, token_budget=event.token_budget, text=describe(event)))

    return on_progress


class ChatSessions:
    """Chat sessions for the web app, on a shared :class:`~geosleuth.api.Geolocator` (models load once)."""

    def __init__(self, geo: Geolocator, *, db_path: str | Path | None = None) -> None:
        self._geo = geo
        self._db_path = Path(db_path) if db_path is not None else None
        self._engine: ChatEngine | None = None
        self._loading = asyncio.Lock()

    async def engine(self) -> ChatEngine:
        async with self._loading:
            if self._engine is None:
                resources = await asyncio.to_thread(lambda: self._geo.resources)  # loads the models, once
                self._engine = ChatEngine(resources, self._db_path)
        return self._engine

    async def start(self, image_path: str, listener: StepListener | None = None) -> TurnResult:
        """A new session about ``image_path``: locates it, reporting each step to ``listener`` (a
        :class:`LiveReport` while it runs, a :class:`StepReport` when it has finished)."""
        result = await (await self.engine()).start(image_path, on_step=_on_step(listener),
                                                   on_progress=_on_progress(listener))
        return TurnResult(result.kind, result.text, await self.state(result.session_id))

    async def send(self, session_id: str, message: str, listener: StepListener | None = None) -> TurnResult:
        """A question or a hint in session ``session_id`` (raises GeosleuthError for an unknown session)."""
        result = await (await self.engine()).send(session_id, message, on_step=_on_step(listener),
                                                  on_progress=_on_progress(listener))
        return TurnResult(result.kind, result.text, await self.state(session_id))

    async def state(self, session_id: str) -> SessionState:
        """Where session ``session_id`` stands (raises GeosleuthError for an unknown session)."""
        session = await (await self.engine()).session(session_id)
        try:
            return SessionState(
                session_id=session.session_id,
                image_path=session.image_path,
                prediction=await session.prediction(),
                trace=await session.trace(),
                constraints=await session.constraints(),
                history=[Turn(t.user, t.reply, t.kind) for t in await session.history()],
            )
        finally:
            await session.aclose()

    async def list(self) -> list[SessionSummary]:
        """The most recently active sessions in the store (web and CLI alike)."""
        infos = await (await self.engine()).list_sessions()
        return [SessionSummary(i.session_id, i.image_path, i.answer, i.updated_at, i.turns)
                for i in infos[:MAX_LISTED_SESSIONS]]

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
