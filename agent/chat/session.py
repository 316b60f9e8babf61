"""One conversation about one image, on a :class:`~.store.SessionStore`."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.agent.chat.graph import ChatContext, describe
from geosleuth.agent.chat.places import PlaceResolver
from geosleuth.agent.chat.results import ChatTurn, ChatTurnResult
from geosleuth.agent.chat.store import SessionStore, default_sessions_db
from geosleuth.constraints import Constraint
from geosleuth.errors import GeosleuthError
from geosleuth.imageio import load_image
from geosleuth.types import Prediction, RunSummary, Trace

if TYPE_CHECKING:
    from geosleuth.agent.graph import LocatePipeline, ProgressCallback, StepCallback


async def check_session(store: SessionStore, session_id: str, image_path: str | None) -> tuple[str, bool]:
    """``(image path, resumed)`` for a session about to be opened.

    Raises GeosleuthError when resuming an unknown session without an image, or when the image
    given differs from the one the session is about; a new session's image must load.
    """
    values = await store.values(session_id)
    stored = values.get("image_path")
    if stored is None:
        if image_path is None:
            raise GeosleuthError(
                f"there is no chat session {session_id!r} in {str(store.path)!r}; start a new one with an image"
            )
        if not Path(image_path).is_file():
            load_image(image_path)  # fails before the session is created, naming the file and why
        return str(image_path), False
    if image_path is not None and Path(image_path).resolve() != Path(stored).resolve():
        raise GeosleuthError(
            f"chat session {session_id!r} is about {stored!r}, not {image_path!r}; resume it without an image "
            "or start a new session"
        )
    return str(stored), True


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


class ChatSession:
    """One conversation about one image. Open with :meth:`open` (or ``Geolocator.open_chat``).

    ``await start()`` locates the image (or, for a resumed session, summarises where it stands);
    ``await ask(message)`` answers a question or applies a hint. Close with ``await aclose()``.
    """

    def __init__(self, *, session_id: str, image_path: str, store: SessionStore, context: ChatContext,
                 resumed: bool, owns_store: bool) -> None:
        self.session_id = session_id
        self.image_path = image_path
        self.resumed = resumed
        self._store = store
        self._context = context
        self._owns_store = owns_store

    @property
    def db_path(self) -> Path:
        return self._store.path

    @classmethod
    async def open(
        cls,
        pipeline: LocatePipeline,
        *,
        image_path: str | None = None,
        session_id: str | None = None,
        db_path: str | Path | None = None,
        resolver: PlaceResolver | None = None,
        store: SessionStore | None = None,
    ) -> ChatSession:
        """Start a session about ``image_path``, or resume ``session_id`` from the session database.

        ``db_path``: the session database (default ``<index.cache_dir>/chat_sessions.sqlite``), or
        ``store``: an open one to share (it stays open when the session closes). ``resolver``: share
        one between sessions (it loads GeoNames' city list on first use).

        Raises GeosleuthError when resuming an unknown session without an image, or when the image
        given differs from the one the session is about.
        """
        owns = store is None
        if store is None:
            store = await SessionStore.open(db_path if db_path is not None else
                                            default_sessions_db(pipeline.resources.config))
        try:
            sid = session_id or new_session_id()
            path, resumed = await check_session(store, sid, image_path)
            context = ChatContext(pipeline=pipeline, resolver=resolver or PlaceResolver(pipeline.resources.geocoder))
            return cls(session_id=sid, image_path=path, store=store, context=context, resumed=resumed,
                       owns_store=owns)
        except BaseException:
            if owns:
                await store.aclose()
            raise

    async def _turn(
        self, message: str | None, on_step: StepCallback | None, on_progress: ProgressCallback | None
    ) -> ChatTurnResult:
        turn_input: dict[str, Any] = {
            "session_id": self.session_id,
            "image_path": self.image_path,
            # per-turn fields, reset on purpose: nothing of the previous turn's routing leaks in
            "message": message,
            "route": None,
            "reply": None,
        }
        context = replace(self._context, on_step=on_step, on_progress=on_progress)
        final = await self._store.run_turn(self.session_id, turn_input, context)
        reply = final.get("reply")
        if reply is None:
            raise GeosleuthError(f"chat session {self.session_id!r}: this turn produced no reply")
        located = reply["kind"] in ("located", "relocated")
        return ChatTurnResult(
            session_id=self.session_id,
            kind=reply["kind"],
            text=reply["text"],
            prediction=Prediction.model_validate(final["prediction"]) if located else None,
            trace=Trace.model_validate(final["trace"]) if located else None,
            summary=RunSummary.model_validate(final["summary"]) if located and final.get("summary") else None,
            constraints=[Constraint.model_validate(c) for c in final.get("constraints") or []],
            notes=reply.get("notes") or [],
        )

    async def start(
        self, *, on_step: StepCallback | None = None, on_progress: ProgressCallback | None = None
    ) -> ChatTurnResult:
        """Locate the image (new session) or summarise where a resumed session stands.

        ``on_step``: awaited with ``(step, TraceEvent)`` as each locate step finishes; ``on_progress``:
        with each ProgressEvent while it runs (step started, VLM tokens so far)."""
        values = await self._store.values(self.session_id)
        if values.get("prediction"):
            prediction = Prediction.model_validate(values["prediction"])
            turns = len(values.get("history") or [])
            return ChatTurnResult(
                session_id=self.session_id,
                kind="resumed",
                text=f"Resumed session {self.session_id} ({turns} earlier turns). {describe(prediction)}",
                prediction=prediction,
                constraints=[Constraint.model_validate(c) for c in values.get("constraints") or []],
            )
        return await self._turn(None, on_step, on_progress)

    async def ask(
        self, message: str, *, on_step: StepCallback | None = None, on_progress: ProgressCallback | None = None
    ) -> ChatTurnResult:
        """Answer a question, or apply a hint and re-locate (see :func:`~.hints.parse_hint`);
        ``on_step`` and ``on_progress`` as for :meth:`start` (called only when the turn re-locates)."""
        if not message.strip():
            raise GeosleuthError("the message is empty; ask a question or give a hint like 'it is in Spain'")
        return await self._turn(message, on_step, on_progress)

    async def history(self) -> list[ChatTurn]:
        values = await self._store.values(self.session_id)
        return [ChatTurn(user=t.get("user"), reply=t["reply"], kind=t["kind"]) for t in values.get("history") or []]

    async def prediction(self) -> Prediction | None:
        values = await self._store.values(self.session_id)
        return Prediction.model_validate(values["prediction"]) if values.get("prediction") else None

    async def trace(self) -> Trace | None:
        values = await self._store.values(self.session_id)
        return Trace.model_validate(values["trace"]) if values.get("trace") else None

    async def constraints(self) -> list[Constraint]:
        values = await self._store.values(self.session_id)
        return [Constraint.model_validate(c) for c in values.get("constraints") or []]

    async def aclose(self) -> None:
        if self._owns_store:
            await self._store.aclose()

    async def __aenter__(self) -> ChatSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
