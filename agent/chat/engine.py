"""Chat sessions for a long-running process (the web app, a notebook): one pipeline, one store.

:class:`ChatEngine` addresses sessions by id, so a web server can keep no session objects of its
own; every method returns the typed objects of :mod:`.results`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from geosleuth.agent.chat.places import PlaceResolver
from geosleuth.agent.chat.results import ChatSessionInfo, ChatTurn, ChatTurnResult
from geosleuth.agent.chat.session import ChatSession
from geosleuth.agent.chat.store import SessionStore, default_sessions_db
from geosleuth.errors import GeosleuthError

if TYPE_CHECKING:
    from geosleuth.agent.graph import LocatePipeline, ProgressCallback, StepCallback
    from geosleuth.agent.runtime import Resources
    from geosleuth.constraints import Constraint
    from geosleuth.types import Trace


class ChatEngine:
    """Start, continue, list and read chat sessions by id.

    ``ChatEngine(resources, store_path)``: ``resources`` are the loaded models (the caller keeps
    owning them: the engine never closes them); ``store_path`` the session database (default
    ``<index.cache_dir>/chat_sessions.sqlite``, the one ``geosleuth chat`` uses). The database
    opens on first use; close it with ``await aclose()`` (or ``async with``).

    Turns of one session run one at a time; different sessions may run concurrently on one
    event loop.
    """

    def __init__(self, resources: Resources, store_path: str | os.PathLike[str] | None = None, *,
                 pipeline: LocatePipeline | None = None, resolver: PlaceResolver | None = None) -> None:
        from geosleuth.agent.graph import LocatePipeline

        self.pipeline = pipeline if pipeline is not None else LocatePipeline(resources)
        self.store_path = Path(store_path) if store_path is not None else default_sessions_db(resources.config)
        self._resolver = resolver if resolver is not None else PlaceResolver(resources.geocoder)
        self._store: SessionStore | None = None
        self._opening = asyncio.Lock()  # two first calls at once open one store
        self._closed = False

    async def _open_store(self) -> SessionStore:
        if self._closed:
            raise GeosleuthError("this chat engine is closed; create a new one")
        async with self._opening:
            if self._store is None:
                self._store = await SessionStore.open(self.store_path)
        return self._store

    async def session(self, session_id: str | None = None, image_path: str | os.PathLike[str] | None = None
                      ) -> ChatSession:
        """A :class:`ChatSession` on the engine's store (closing it leaves the store open)."""
        return await ChatSession.open(
            self.pipeline, image_path=None if image_path is None else os.fspath(image_path), session_id=session_id,
            resolver=self._resolver, store=await self._open_store(),
        )

    async def start(self, image_path: str | os.PathLike[str], *, session_id: str | None = None,
                    on_step: StepCallback | None = None,
                    on_progress: ProgressCallback | None = None) -> ChatTurnResult:
        """A new session about ``image_path``: locates it. The result's ``session_id`` names the session.

        ``on_step``: awaited with ``(step, TraceEvent)`` as each locate step finishes; ``on_progress``:
        with each ProgressEvent while it runs (step started, VLM tokens so far)."""
        session = await self.session(session_id, image_path)
        if session.resumed:
            raise GeosleuthError(f"chat session {session.session_id!r} exists already; send it a turn instead")
        return await session.start(on_step=on_step, on_progress=on_progress)

    async def resume(self, session_id: str) -> ChatTurnResult:
        """Where a stored session stands (kind ``resumed``: the latest prediction and hints)."""
        return await (await self.session(session_id)).start()

    async def send(self, session_id: str, text: str, *, on_step: StepCallback | None = None,
                   on_progress: ProgressCallback | None = None) -> ChatTurnResult:
        """A question or a hint for ``session_id``; ``on_step`` and ``on_progress`` as for :meth:`start`
        (a hint re-locates)."""
        return await (await self.session(session_id)).ask(text, on_step=on_step, on_progress=on_progress)

    async def list_sessions(self) -> list[ChatSessionInfo]:
        """Every stored session, most recently active first."""
        return await (await self._open_store()).list_sessions()

    async def history(self, session_id: str) -> list[ChatTurn]:
        return await (await self.session(session_id)).history()

    async def constraints(self, session_id: str) -> list[Constraint]:
        return await (await self.session(session_id)).constraints()

    async def trace(self, session_id: str) -> Trace | None:
        """The latest run's trace (for viewing, e.g. with :func:`geosleuth.agent.trace.trace_html`)."""
        return await (await self.session(session_id)).trace()

    async def aclose(self) -> None:
        self._closed = True
        if self._store is not None:
            store, self._store = self._store, None
            await store.aclose()

    async def __aenter__(self) -> ChatEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
