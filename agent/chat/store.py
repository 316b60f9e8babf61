"""Where chat sessions live: one SQLite file holding LangGraph's checkpoints (each session's state,
by ``thread_id`` = session id) and a small index of the sessions for listing them.

Sessions outlive processes: ``geosleuth chat --resume ID`` and the web app open the same file.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.agent.chat.graph import ChatContext, build_chat_graph
from geosleuth.agent.chat.results import ChatSessionInfo
from geosleuth.config import expand_path
from geosleuth.types import Prediction

if TYPE_CHECKING:
    from geosleuth.agent.graph import LocatePipeline
    from geosleuth.config import Config

SESSIONS_DB = "chat_sessions.sqlite"
_INDEX = "geosleuth_chat_sessions"  # our table, beside LangGraph's checkpoint tables


def default_sessions_db(source: Config | LocatePipeline) -> Path:
    """``<index.cache_dir>/chat_sessions.sqlite`` of a configuration (or of a pipeline's)."""
    from geosleuth.config import Config

    config = source if isinstance(source, Config) else source.resources.config
    return expand_path(config.index.cache_dir) / SESSIONS_DB


class SessionStore:
    """The session database, opened once and shared by every session of a process.

    Open with ``await SessionStore.open(path)``, close with ``await aclose()``. Turns of one session
    run one at a time; turns of different sessions may run concurrently.
    """

    def __init__(self, path: Path, saver: Any, exit_stack: AsyncExitStack) -> None:
        self.path = path
        self._saver = saver
        self._exit_stack = exit_stack
        self.graph = build_chat_graph().compile(checkpointer=saver, name="geosleuth-chat")
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    async def open(cls, path: str | Path) -> SessionStore:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        db = Path(path)
        db.parent.mkdir(parents=True, exist_ok=True)
        stack = AsyncExitStack()
        try:
            saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(db)))
            await saver.setup()
            async with saver.lock:
                async with saver.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                              (_INDEX,)) as cursor:
                    indexed = await cursor.fetchone() is not None
                await saver.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_INDEX} (session_id TEXT PRIMARY KEY, image_path TEXT NOT NULL, "
                    "created_at REAL NOT NULL, updated_at REAL NOT NULL, turns INTEGER NOT NULL, answer TEXT, "
                    "constraints TEXT NOT NULL)"
                )
                await saver.conn.commit()
            store = cls(db, saver, stack)
            if not indexed:  # a file from before the index existed: list its sessions too
                await store._index_existing()
            return store
        except BaseException:
            await stack.aclose()
            raise

    @staticmethod
    def _config(session_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": session_id}}

    async def values(self, session_id: str) -> dict[str, Any]:
        """The session's stored state (empty for an unknown session)."""
        snapshot = await self.graph.aget_state(self._config(session_id))
        return dict(snapshot.values or {})

    async def run_turn(self, session_id: str, turn_input: dict[str, Any], context: ChatContext) -> dict[str, Any]:
        """Run one turn of ``session_id`` through the chat graph; the state after it."""
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            final = await self.graph.ainvoke(turn_input, self._config(session_id), context=context)
            await self._index(session_id, final)
        return final

    async def _index_existing(self) -> None:
        newest: dict[str, float] = {}  # session id -> time of its latest checkpoint
        async for item in self._saver.alist(None):  # newest first; holds the saver's lock while it runs
            session_id = item.config["configurable"]["thread_id"]
            if session_id not in newest:
                newest[session_id] = datetime.fromisoformat(item.checkpoint["ts"]).timestamp()
        for session_id, at in newest.items():
            values = await self.values(session_id)
            if values.get("image_path"):
                await self._index(session_id, values, at=at)

    async def _index(self, session_id: str, state: dict[str, Any], *, at: float | None = None) -> None:
        prediction = Prediction.model_validate(state["prediction"]) if state.get("prediction") else None
        answer = None
        if prediction is not None and prediction.ok:
            answer = (prediction.place.hierarchy() if prediction.place is not None
                      else f"{prediction.lat:.4f}, {prediction.lon:.4f}")
        labels = [c.get("label", "") for c in state.get("constraints") or []]
        now = time.time() if at is None else at
        async with self._saver.lock:
            await self._saver.conn.execute(
                f"INSERT INTO {_INDEX} (session_id, image_path, created_at, updated_at, turns, answer, constraints) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET updated_at = excluded.updated_at, "
                "turns = excluded.turns, answer = excluded.answer, constraints = excluded.constraints",
                (session_id, state.get("image_path", ""), now, now, len(state.get("history") or []), answer,
                 json.dumps(labels)),
            )
            await self._saver.conn.commit()

    async def list_sessions(self) -> list[ChatSessionInfo]:
        """Every session in the file, most recently active first."""
        async with self._saver.lock, self._saver.conn.execute(
            f"SELECT session_id, image_path, created_at, updated_at, turns, answer, constraints FROM {_INDEX} "
            "ORDER BY updated_at DESC, session_id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            ChatSessionInfo(session_id=r[0], image_path=r[1], created_at=r[2], updated_at=r[3], turns=r[4],
                            answer=r[5], constraints=json.loads(r[6]))
            for r in rows
        ]

    async def aclose(self) -> None:
        await self._exit_stack.aclose()
