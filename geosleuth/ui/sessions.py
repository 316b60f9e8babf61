"""The web app's one adapter over the chat engine (:mod:`geosleuth.agent.chat`).

Everything the app needs from chat goes through :class:`ChatSessions`, so a change in the chat
engine's API is adapted here only. Sessions live in the same SQLite store as ``geosleuth chat``
(``<index.cache_dir>/chat_sessions.sqlite`` by default): a session started in the browser resumes
with ``geosleuth chat --resume ID`` and the other way round.

Steps stream as they run: the chat engine's locate pipeline is a :class:`_StepReportingPipeline`,
which runs locates through :meth:`Geolocator.astream` and reports every finished step to the
listener of the turn that asked for it. A re-locate that reuses the VLM's earlier answers
(``prior_reasoning``) cannot go through ``astream``; its steps are reported from its trace when it ends.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.agent.chat import ChatSession, PlaceResolver, default_sessions_db
from geosleuth.agent.graph import LocateOutcome, LocatePipeline
from geosleuth.constraints import Constraint
from geosleuth.errors import GeosleuthError
from geosleuth.types import Prediction, Trace, TraceEvent

if TYPE_CHECKING:
    from geosleuth.agent.runtime import Resources
    from geosleuth.api import Geolocator

# Open sessions kept in memory (each holds a SQLite connection); older ones are closed and reopen on use.
MAX_OPEN_SESSIONS = 16
# How many sessions the list shows (newest first).
MAX_LISTED_SESSIONS = 50


@dataclass(frozen=True)
class StepReport:
    """One pipeline step that finished: its name, wall time, error if any, and a one-line summary."""

    step: str
    duration_s: float | None
    error: str | None = None
    summary: str = ""
    live: bool = True  # False: reported from the trace after the run (a re-locate reusing earlier answers)


StepListener = Callable[[StepReport], Awaitable[None]]


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
    updated_at: str | None
    turns: int


def _summary(event: TraceEvent | None) -> str:
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


def _report(step: str, event: TraceEvent | None, *, live: bool) -> StepReport:
    return StepReport(
        step=step,
        duration_s=event.duration_s if event is not None else None,
        error=event.error if event is not None else None,
        summary=_summary(event),
        live=live,
    )


# The listener of the turn running in this task (asyncio tasks, LangGraph's among them, inherit it):
# one pipeline serves every session, each turn reports to its own page.
_listener: ContextVar[StepListener | None] = ContextVar("geosleuth_ui_step_listener", default=None)


class _StepReportingPipeline:
    """What the chat engine needs of a locate pipeline (``resources``, ``run``), reporting each step
    to the current turn's listener."""

    _STREAMABLE = frozenset({"constraints", "top_k", "hint", "prior_reasoning"})

    def __init__(self, geo: Geolocator, pipeline: LocatePipeline) -> None:
        self._geo = geo
        self._pipeline = pipeline

    @property
    def resources(self) -> Resources:
        return self._pipeline.resources

    async def run(self, image_path: str, **options: Any) -> LocateOutcome:
        listener = _listener.get()
        streamable = options.get("prior_reasoning") is None and set(options) <= self._STREAMABLE
        if listener is None or not streamable:
            outcome = await self._pipeline.run(image_path, **options)
            if listener is not None:
                for event in outcome.trace.events:
                    await listener(_report(event.step, event, live=False))
            return outcome
        prediction: Prediction | None = None
        trace: Trace | None = None
        reasoning = None
        async for step, update in self._geo.astream(
            image_path, constraint=list(options.get("constraints") or ()), top_k=options.get("top_k"),
            hint=options.get("hint"),
        ):
            if step == "done":
                prediction, trace = update["prediction"], update["trace"]
                continue
            if step == "reason":
                reasoning = update.get("reasoning")  # kept: a later hint may reuse the VLM's answers
            await listener(_report(step, update.get("event"), live=True))
        if prediction is None or trace is None:  # pragma: no cover - astream always ends with "done"
            raise GeosleuthError("the locate stream ended without a prediction")
        return LocateOutcome(prediction=prediction, trace=trace, reasoning=reasoning)


@dataclass
class _Open:
    session: ChatSession
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ChatSessions:
    """Chat sessions for the web app, on a shared :class:`~geosleuth.api.Geolocator` (models load once)."""

    def __init__(self, geo: Geolocator, *, db_path: str | Path | None = None) -> None:
        self._geo = geo
        self._db_path = Path(db_path) if db_path is not None else None
        self._pipeline: _StepReportingPipeline | None = None
        self._resolver: PlaceResolver | None = None
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._loading = asyncio.Lock()

    async def _base(self) -> tuple[_StepReportingPipeline, PlaceResolver]:
        async with self._loading:
            if self._pipeline is None:
                resources = await asyncio.to_thread(lambda: self._geo.resources)  # loads the models, once
                self._pipeline = _StepReportingPipeline(self._geo, LocatePipeline(resources))
                self._resolver = PlaceResolver(resources.geocoder)
        assert self._resolver is not None
        return self._pipeline, self._resolver

    async def db_path(self) -> Path:
        pipeline, _ = await self._base()
        return self._db_path or default_sessions_db(pipeline)  # type: ignore[arg-type]  # duck-typed

    async def _session(self, session_id: str | None, image_path: str | None = None) -> _Open:
        if session_id is not None and session_id in self._open:
            self._open.move_to_end(session_id)
            return self._open[session_id]
        pipeline, resolver = await self._base()
        session = await ChatSession.open(
            pipeline,  # type: ignore[arg-type]  # duck-typed: resources + run
            image_path=image_path, session_id=session_id, db_path=await self.db_path(), resolver=resolver,
        )
        entry = _Open(session)
        self._open[session.session_id] = entry
        while len(self._open) > MAX_OPEN_SESSIONS:
            _, old = self._open.popitem(last=False)
            async with old.lock:
                await old.session.aclose()
        return entry

    async def _run(self, entry: _Open, listener: StepListener | None, turn: Callable[[], Awaitable[Any]]) -> Any:
        async with entry.lock:
            token = _listener.set(listener)
            try:
                return await turn()
            finally:
                _listener.reset(token)

    async def start(self, image_path: str, listener: StepListener | None = None) -> TurnResult:
        """A new session about ``image_path``: locates it, reporting each step to ``listener``."""
        entry = await self._session(None, image_path)
        reply = await self._run(entry, listener, entry.session.start)
        return TurnResult(reply.kind, reply.text, await self.state(entry.session.session_id))

    async def send(self, session_id: str, message: str, listener: StepListener | None = None) -> TurnResult:
        """A question or a hint in session ``session_id`` (raises GeosleuthError for an unknown session)."""
        entry = await self._session(session_id)
        reply = await self._run(entry, listener, lambda: entry.session.ask(message))
        return TurnResult(reply.kind, reply.text, await self.state(session_id))

    async def state(self, session_id: str) -> SessionState:
        """Where session ``session_id`` stands (raises GeosleuthError for an unknown session)."""
        session = (await self._session(session_id)).session
        return SessionState(
            session_id=session.session_id,
            image_path=session.image_path,
            prediction=await session.prediction(),
            trace=await session.trace(),
            constraints=await session.constraints(),
            history=[Turn(t.user, t.reply, t.kind) for t in await session.history()],
        )

    async def list(self) -> list[SessionSummary]:
        """The newest sessions in the store (web and CLI alike), newest first."""
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        db = await self.db_path()
        if not db.is_file():
            return []
        found: dict[str, SessionSummary] = {}
        async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
            # Checkpoint ids grow with time, so the first checkpoint seen of a session is its latest.
            async for item in saver.alist(None):
                sid = str(item.config["configurable"].get("thread_id"))
                if sid in found:
                    continue
                values = item.checkpoint.get("channel_values") or {}
                image = values.get("image_path")
                if not image:
                    continue
                prediction = values.get("prediction") or {}
                place = (prediction.get("place") or {}) if isinstance(prediction, dict) else {}
                found[sid] = SessionSummary(
                    session_id=sid,
                    image_path=str(image),
                    place=_hierarchy(place) if place else None,
                    updated_at=item.checkpoint.get("ts"),
                    turns=len(values.get("history") or []),
                )
                if len(found) >= MAX_LISTED_SESSIONS:
                    break
        return list(found.values())

    async def aclose(self) -> None:
        while self._open:
            _, entry = self._open.popitem()
            await entry.session.aclose()


def _hierarchy(place: dict[str, Any]) -> str:
    from geosleuth.types import Place

    try:
        return Place.model_validate(place).hierarchy()
    except ValueError:
        return "unknown place"
