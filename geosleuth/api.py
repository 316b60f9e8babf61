"""The public Python API: ``Geolocator``.

    from geosleuth.api import Geolocator

    with Geolocator.from_config() as geo:
        prediction = geo.locate("photo.jpg")
        print(prediction.lat, prediction.lon, prediction.place.hierarchy(), prediction.confidence)

Models (image encoder, location encoder, GPS gallery, gallery store, VLM backend) load once per
``Geolocator``, on first use, and are shared by every call and by concurrent calls.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

from geosleuth.config import Config, apply_overrides, load_config
from geosleuth.constraints import Constraint
from geosleuth.errors import ConfigError, GeosleuthError
from geosleuth.types import Prediction, Trace

if TYPE_CHECKING:
    from geosleuth.agent.chat import ChatEngine, ChatSession, PlaceResolver
    from geosleuth.agent.graph import LocateOutcome, LocatePipeline
    from geosleuth.agent.runtime import Resources
    from geosleuth.geo import ReverseGeocoder

__all__ = ["Constraint", "Geolocator", "LocateRequest", "parse_constraint"]

ImagePath = str | PathLike[str]
Constraints = Constraint | Sequence[Constraint] | None


@dataclass(frozen=True)
class LocateRequest:
    """One image to locate, with per-image options (for ``locate_many``).

    ``exclude_ids`` / ``exclude_authors``: gallery items never retrieved for this image (evaluation
    without leakage: the image itself, or its photographer's other pictures). ``hint``: what you know
    about the place, in words, shown to the VLM (see :meth:`Geolocator.locate`).
    """

    path: str
    constraint: Constraints = None
    top_k: int | None = None
    exclude_ids: tuple[str, ...] = ()
    exclude_authors: tuple[str, ...] = ()
    hint: str | None = None


class Geolocator:
    """Locates photos. Create with :meth:`from_config`; close with :meth:`close` (or ``with``).

    Safe to share between concurrent ``alocate`` calls on one event loop; the sync methods run on a
    private event loop and must not be called from inside a running one (use the ``a*`` methods).
    """

    def __init__(self, config: Config, *, resources: Resources | None = None) -> None:
        """Prefer :meth:`from_config`. ``resources``: already-loaded models (tests, embedding apps)."""
        self._config = config
        self._resources = resources
        self._pipeline: LocatePipeline | None = None
        self._load_lock = threading.Lock()
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._place_resolver: PlaceResolver | None = None  # chat hints; built on the first chat

    @classmethod
    def from_config(cls, config: Config | None = None, **overrides: Any) -> Geolocator:
        """A geolocator for ``config`` (default: :func:`geosleuth.config.load_config`).

        ``overrides``: ``section={"key": value}`` or ``section__key=value``
        (e.g. ``vlm__backend="none"``). Nothing loads until the first call.
        """
        base = config if config is not None else load_config()
        return cls(apply_overrides(base, overrides, origin="override") if overrides else base)

    @property
    def config(self) -> Config:
        return self._config

    @property
    def resources(self) -> Resources:
        """The loaded models (loads them on first access, once)."""
        return self._ensure_pipeline().resources

    def _ensure_pipeline(self) -> LocatePipeline:
        if self._closed:
            raise GeosleuthError("this Geolocator is closed; create a new one with Geolocator.from_config()")
        with self._load_lock:
            if self._pipeline is None:
                from geosleuth.agent.graph import LocatePipeline
                from geosleuth.agent.runtime import Resources

                resources = self._resources if self._resources is not None else Resources.load(self._config)
                self._resources = resources
                self._pipeline = LocatePipeline(resources)
            return self._pipeline

    async def _apipeline(self) -> LocatePipeline:
        if self._pipeline is not None and not self._closed:
            return self._pipeline
        # Loading takes seconds: keep the event loop free meanwhile (the lock makes it happen once).
        return await asyncio.to_thread(self._ensure_pipeline)

    def _run_sync(self, coro: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise GeosleuthError(
                "Geolocator's synchronous methods cannot run inside an event loop; use `await geo.alocate(...)` "
                "(and alocate_with_trace / aclose) there"
            )
        if self._sync_loop is None or self._sync_loop.is_closed():
            self._sync_loop = asyncio.new_event_loop()
        return self._sync_loop.run_until_complete(coro)

    # -- readiness ---------------------------------------------------------------------------

    def check_ready(self) -> None:
        """See :meth:`acheck_ready`."""
        self._run_sync(self.acheck_ready())

    async def acheck_ready(self) -> None:
        """Preflight: load every model and index the configuration names (an in-process VLM's model
        loads here) and, when the VLM is a server, send it one real request. Raises
        StageUnavailableError (what failed, the URL, how to start it) before any photo is run. With
        ``agent.mode = tools`` a server is also sent one tool call: one that cannot call tools makes
        the run use the fixed pipeline (:attr:`tools_fallback` says why)."""
        pipeline = await self._apipeline()
        backend = pipeline.resources.backend
        if backend is not None and self._config.vlm.backend == "openai":
            from geosleuth.vlm.preflight import check_server_answers

            await check_server_answers(backend, self._config.vlm)
        resources = pipeline.resources
        if backend is not None and self._config.agent.mode == "tools" and resources.tools_fallback is None:
            from geosleuth.agent.toolloop.fallback import probe_tool_support

            resources.tools_fallback = await probe_tool_support(backend)

    @property
    def tools_fallback(self) -> str | None:
        """``agent.mode = tools`` but the VLM server cannot call tools: why (the run uses the fixed
        pipeline, and every answer says so); None otherwise. Known after :meth:`acheck_ready`."""
        return self._resources.tools_fallback if self._resources is not None else None

    # -- one image ---------------------------------------------------------------------------

    def locate(
        self, image_path: ImagePath, *, top_k: int | None = None, constraint: Constraints = None,
        exclude_ids: Sequence[str] = (), exclude_authors: Sequence[str] = (), hint: str | None = None,
    ) -> Prediction:
        """Where ``image_path`` was taken. Raises ImageLoadError (naming the file) for a bad image.

        A prediction whose sources all failed has ``lat``/``lon`` None and a ``failure_reason``
        (``status`` "failed"); one made without a stage the configuration asks for (e.g. the VLM
        server did not answer) has ``status`` "degraded" and names them in ``missing_stages``.
        ``hint``: what you know about the place, in words (e.g. "it is in South America"); the VLM
        is shown it. It restricts nothing by itself: pass ``constraint`` for that.
        """
        prediction, _ = self._run_sync(
            self._alocate(image_path, top_k, constraint, exclude_ids, exclude_authors, hint)
        )
        return prediction

    async def alocate(
        self, image_path: ImagePath, *, top_k: int | None = None, constraint: Constraints = None,
        exclude_ids: Sequence[str] = (), exclude_authors: Sequence[str] = (), hint: str | None = None,
    ) -> Prediction:
        prediction, _ = await self._alocate(image_path, top_k, constraint, exclude_ids, exclude_authors, hint)
        return prediction

    def locate_with_trace(
        self, image_path: ImagePath, *, top_k: int | None = None, constraint: Constraints = None,
        exclude_ids: Sequence[str] = (), exclude_authors: Sequence[str] = (), hint: str | None = None,
    ) -> tuple[Prediction, Trace]:
        """The prediction and its full trace (``trace.prediction`` is the same prediction)."""
        return self._run_sync(self._alocate(image_path, top_k, constraint, exclude_ids, exclude_authors, hint))

    async def alocate_with_trace(
        self, image_path: ImagePath, *, top_k: int | None = None, constraint: Constraints = None,
        exclude_ids: Sequence[str] = (), exclude_authors: Sequence[str] = (), hint: str | None = None,
    ) -> tuple[Prediction, Trace]:
        return await self._alocate(image_path, top_k, constraint, exclude_ids, exclude_authors, hint)

    async def _alocate(
        self,
        image_path: ImagePath,
        top_k: int | None,
        constraint: Constraints,
        exclude_ids: Sequence[str],
        exclude_authors: Sequence[str],
        hint: str | None,
    ) -> tuple[Prediction, Trace]:
        """The one implementation behind locate / alocate / locate_with_trace / alocate_with_trace."""
        outcome = await self._arun(
            LocateRequest(
                os.fspath(image_path), constraint=constraint, top_k=top_k,
                exclude_ids=tuple(exclude_ids), exclude_authors=tuple(exclude_authors), hint=hint,
            )
        )
        return outcome.prediction, outcome.trace

    async def _arun(self, request: LocateRequest) -> LocateOutcome:
        pipeline = await self._apipeline()
        return await pipeline.run(
            request.path,
            constraints=as_constraints(request.constraint),
            top_k=request.top_k,
            exclude_ids=request.exclude_ids,
            exclude_authors=request.exclude_authors,
            hint=request.hint,
        )

    async def astream(
        self,
        image_path: ImagePath,
        *,
        top_k: int | None = None,
        constraint: Constraints = None,
        hint: str | None = None,
        progress: bool = False,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Progress, step by step: ``(step, update)`` after each of perceive, retrieve, reason,
        verify, decide (``update["event"]`` is that step's TraceEvent; the other keys are what the
        step produced), then one final ``("done", {"prediction": Prediction, "trace": Trace,
        "summary": RunSummary})``. ``progress``: also ``("progress", {"progress": ProgressEvent})`` while a step
        runs."""
        pipeline = await self._apipeline()
        async for step, update in pipeline.stream(
            os.fspath(image_path), constraints=as_constraints(constraint), top_k=top_k, hint=hint,
            progress=progress,
        ):
            yield step, update

    # -- many images -------------------------------------------------------------------------

    async def locate_many(
        self,
        images: Iterable[ImagePath | LocateRequest],
        *,
        concurrency: int = 4,
    ) -> AsyncIterator[tuple[str, Prediction | Exception]]:
        """``(path, prediction or the exception it raised)`` in completion order, ``concurrency`` in flight.

        Images are read from ``images`` lazily, so a long generator is fine. An image that fails
        (e.g. ImageLoadError) is yielded with its exception; the others carry on.
        """
        async for path, result in self.locate_many_with_trace(images, concurrency=concurrency):
            yield path, result if isinstance(result, Exception) else result[0]

    async def locate_many_with_trace(
        self,
        images: Iterable[ImagePath | LocateRequest],
        *,
        concurrency: int = 4,
    ) -> AsyncIterator[tuple[str, tuple[Prediction, Trace] | Exception]]:
        """As :meth:`locate_many`, with each prediction's trace."""
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        from contextlib import aclosing

        from geosleuth.agent.batch import map_unordered

        await self._apipeline()  # load once, before the first wave (and fail early on bad config)
        requests = (
            item if isinstance(item, LocateRequest) else LocateRequest(os.fspath(item)) for item in images
        )

        async def run(request: LocateRequest) -> tuple[str, tuple[Prediction, Trace] | Exception]:
            try:
                outcome = await self._arun(request)
            except Exception as exc:  # one image's failure; KeyboardInterrupt / cancellation propagate
                return request.path, exc
            return request.path, (outcome.prediction, outcome.trace)

        async with aclosing(map_unordered(run, requests, concurrency)) as results:
            async for item in results:
                yield item

    # -- chat --------------------------------------------------------------------------------

    async def open_chat(
        self,
        image_path: ImagePath | None = None,
        *,
        session_id: str | None = None,
        db_path: str | PathLike[str] | None = None,
    ) -> ChatSession:
        """A chat about one image (:class:`geosleuth.agent.chat.ChatSession`; close it with ``aclose``).

        New session: give ``image_path`` (``session_id`` optional, a new one is made). Resume: give
        the ``session_id`` of an earlier session. ``db_path``: the session database (default:
        ``<index.cache_dir>/chat_sessions.sqlite``).
        """
        from geosleuth.agent.chat import ChatSession, PlaceResolver

        pipeline = await self._apipeline()
        if self._place_resolver is None:
            self._place_resolver = PlaceResolver(pipeline.resources.geocoder)
        return await ChatSession.open(
            pipeline,
            image_path=None if image_path is None else os.fspath(image_path),
            session_id=session_id,
            db_path=db_path,
            resolver=self._place_resolver,
        )

    async def open_chat_engine(self, db_path: str | PathLike[str] | None = None) -> ChatEngine:
        """Chat sessions by id, for a server (:class:`geosleuth.agent.chat.ChatEngine`), on this
        geolocator's models. ``db_path``: the session database (default: the one ``open_chat`` and
        ``geosleuth chat`` use). Close the engine (``aclose``) before this geolocator.
        """
        from geosleuth.agent.chat import ChatEngine, PlaceResolver

        pipeline = await self._apipeline()
        if self._place_resolver is None:
            self._place_resolver = PlaceResolver(pipeline.resources.geocoder)
        return ChatEngine(pipeline.resources, db_path, pipeline=pipeline, resolver=self._place_resolver)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the VLM backend. Idempotent."""
        if self._closed:
            return
        self._run_sync(self.aclose())
        if self._sync_loop is not None and not self._sync_loop.is_closed():
            self._sync_loop.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pipeline is not None:
            await self._pipeline.resources.aclose()

    def __enter__(self) -> Geolocator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Geolocator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def parse_constraint(text: str, geocoder: ReverseGeocoder | None = None) -> Constraint:
    """A user's hint as a constraint: "South America", "in Spain", "within 50 km of Porto", "near Lima".

    Raises GeosleuthError saying what is understood when ``text`` is not such a hint.
    """
    from geosleuth.agent.chat import PlaceResolver, parse_hint
    from geosleuth.geo import ReverseGeocoder

    hint = parse_hint(text, PlaceResolver(geocoder or ReverseGeocoder()))
    if hint.constraint is None:
        what = f"the place {hint.place_text!r} is unknown" if hint.kind == "unknown-place" else "it is not a place hint"
        raise GeosleuthError(
            f"cannot use {text!r} as a location hint: {what}. Give a continent ('South America'), a country "
            "('Spain'), or a circle ('within 50 km of Porto', 'near Lima')"
        )
    return hint.constraint


def as_constraints(constraint: Constraints) -> list[Constraint]:
    """None / one constraint / several -> a list."""
    if constraint is None:
        return []
    if isinstance(constraint, Constraint):
        return [constraint]
    constraints = list(constraint)
    for item in constraints:
        if not isinstance(item, Constraint):
            raise TypeError(f"constraint must be a geosleuth Constraint, got {type(item).__name__}")
    return constraints
