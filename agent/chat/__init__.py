"""Chat about one photo: locate it, answer follow-up questions, take hints, remember everything.

Used by ``geosleuth chat``, the web app and ``Geolocator.open_chat``; all see the same sessions
(one SQLite file, ``<index.cache_dir>/chat_sessions.sqlite`` by default).

Public API (everything below is importable from ``geosleuth.agent.chat``):

- :class:`ChatEngine` — sessions by id, for servers::

      engine = ChatEngine(resources, store_path)         # resources: geosleuth.agent.runtime.Resources
      first = await engine.start("photo.jpg", on_step=cb)  # -> ChatTurnResult (kind "located");
                                                         # cb(step, TraceEvent) awaited as each step ends
      reply = await engine.send(first.session_id, "it is in South America", on_step=cb)  # "relocated"
      reply = await engine.send(first.session_id, "why not Spain?")           # kind "answer"
      await engine.resume(session_id)                    # kind "resumed": where it stands
      await engine.list_sessions()                       # -> list[ChatSessionInfo]
      await engine.history(session_id)                   # -> list[ChatTurn]
      await engine.constraints(session_id); await engine.trace(session_id)
      await engine.aclose()

- :class:`ChatSession` — one conversation as an object (``ChatSession.open(pipeline, image_path=...
  | session_id=...)``, ``start()``, ``ask(text)``, ``history()``, ``prediction()``, ``trace()``,
  ``constraints()``, ``aclose()``); ``Geolocator.open_chat`` returns one.
- Results: :class:`ChatTurnResult` (``session_id``, ``kind``, ``text``, ``prediction``, ``trace``,
  ``summary``, ``constraints``, ``notes``; ``ChatReply`` is its former name), :class:`ChatTurn`,
  :class:`ChatSessionInfo` — pydantic models, ``model_dump(mode="json")`` for the wire.
- Hints: :func:`parse_hint` -> :class:`Hint`, :class:`PlaceResolver`, :func:`merge_constraints`,
  :func:`hint_text`, :func:`describe_constraint`, :func:`answers_for_hints`.

How a turn runs (:mod:`.graph`): a question is answered by the VLM from the image and the latest
run's typed :class:`geosleuth.types.RunSummary` (never from trace JSON); a hint becomes a
constraint and re-runs the locate graph inside it. The VLM's earlier answers are reused only when
most of them lie inside the hints (and then only those inside count); a hint that contradicts most
of them sends the question to the VLM again, with the hint in the user's words.

Modules: :mod:`.places` (place names), :mod:`.hints` (the hint parser), :mod:`.followup` (the VLM's
answer to a question, from the run summary cut to fit), :mod:`.graph` (the turn graph), :mod:`.store`
(persistence), :mod:`.session`, :mod:`.engine`, :mod:`.results`. The package may import the locate
pipeline (``agent.graph``), the VLM backends and the core (``geosleuth.types``,
``geosleuth.constraints``, ``geosleuth.geo``); no stage imports it.
"""

from geosleuth.agent.chat.engine import ChatEngine
from geosleuth.agent.chat.graph import (
    AnswersForHints,
    ChatContext,
    ChatState,
    answers_for_hints,
    build_chat_graph,
    describe,
)
from geosleuth.agent.chat.hints import (
    DEFAULT_CITY_RADIUS_KM,
    KM_PER_MILE,
    Hint,
    describe_constraint,
    hint_text,
    merge_constraints,
    parse_hint,
)
from geosleuth.agent.chat.places import City, PlaceResolver, fold
from geosleuth.agent.chat.results import ChatReply, ChatSessionInfo, ChatTurn, ChatTurnResult, ReplyKind
from geosleuth.agent.chat.session import ChatSession
from geosleuth.agent.chat.store import SESSIONS_DB, SessionStore, default_sessions_db

__all__ = [
    "DEFAULT_CITY_RADIUS_KM",
    "KM_PER_MILE",
    "SESSIONS_DB",
    "AnswersForHints",
    "ChatContext",
    "ChatEngine",
    "ChatReply",
    "ChatSession",
    "ChatSessionInfo",
    "ChatState",
    "ChatTurn",
    "ChatTurnResult",
    "City",
    "Hint",
    "PlaceResolver",
    "ReplyKind",
    "SessionStore",
    "answers_for_hints",
    "build_chat_graph",
    "default_sessions_db",
    "describe",
    "describe_constraint",
    "fold",
    "hint_text",
    "merge_constraints",
    "parse_hint",
]
