"""The web app: a Starlette application over one :class:`~geosleuth.api.Geolocator`.

Routes (all JSON unless said otherwise):

- ``GET /`` the page; ``/static/...`` its script, style and vendored Leaflet;
- ``POST /api/sessions?name=FILE`` (body: the photo's bytes) starts a chat session and streams its
  steps as server-sent events (``progress`` while a step runs: VLM tokens, speed, time left; ``step``
  when it has finished; then ``result`` or ``error``);
- ``POST /api/sessions/{id}/messages`` (``{"text": ...}``) a question or a hint, streamed the same way;
- ``GET /api/sessions`` the stored sessions (web and CLI); ``GET /api/sessions/{id}`` one of them;
- ``GET /api/sessions/{id}/image``, ``/trace.html`` (the ``trace html`` page), ``/trace.json``,
  ``/prediction.json`` (downloads);
- ``POST /api/batch?name=FILE`` (body: a results JSONL) its rows for the batch browser;
- ``GET /api/basemap`` country polygons (GeoJSON) for the offline map.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from geosleuth.config import expand_path
from geosleuth.errors import GeosleuthError
from geosleuth.ui import views
from geosleuth.ui.security import TokenMiddleware, UploadError, check_image, save_upload
from geosleuth.ui.sessions import ChatSessions, LiveReport, StepReport, TurnResult

if TYPE_CHECKING:
    from geosleuth.api import Geolocator

STATIC = Path(__file__).with_name("static")
BASEMAP_TOLERANCE_DEG = 0.05  # about 5 km: fine from world to country zoom; about 1.2 MB of GeoJSON
log = logging.getLogger("geosleuth.ui")

# The page loads nothing from elsewhere; OpenStreetMap tiles only once the user turns them on.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob: https://tile.openstreetmap.org; connect-src 'self'; frame-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'"
)
# The trace page is geosleuth's self-contained HTML (inline style, inline SVG, no script).
_TRACE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"


@dataclass(frozen=True)
class UISettings:
    max_upload_bytes: int
    token: str | None = None
    db_path: Path | None = None  # the chat session store (default: the CLI's)
    uploads_dir: Path | None = None  # default: <index.cache_dir>/ui_uploads
    # Host names requests may use (None: any). On loopback this stops DNS-rebinding pages.
    allowed_hosts: tuple[str, ...] | None = None


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _wrong_type(request: Request, expected: str) -> JSONResponse | None:
    """Writes must say their content type: a cross-site form can only send form or text types, so
    another web page cannot post to this app behind the user's back (it needs a CORS preflight,
    which this app never grants)."""
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given == expected:
        return None
    return _error(f"send this request with Content-Type: {expected} (got {given or 'none'})", 415)


class _App:
    """The routes' shared state: the sessions, the settings, the cached basemap."""

    def __init__(self, geo: Geolocator, settings: UISettings) -> None:
        self.geo = geo
        self.settings = settings
        self.sessions = ChatSessions(geo, db_path=settings.db_path)
        self.uploads = settings.uploads_dir or expand_path(geo.config.index.cache_dir) / "ui_uploads"
        self._basemap: bytes | None = None
        self._basemap_lock = asyncio.Lock()
        self._turns: set[asyncio.Task[Any]] = set()

    # -- streaming turns -------------------------------------------------------------------

    def _stream(self, first: list[bytes], run: Any) -> StreamingResponse:
        """Run one chat turn in a task; stream its steps and its result (or error) as SSE."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def listener(report: StepReport | LiveReport) -> None:
            await queue.put(_sse("step" if isinstance(report, StepReport) else "progress", report.__dict__))

        async def turn() -> None:
            try:
                result: TurnResult = await run(listener)
                await queue.put(_sse("result", {"kind": result.kind, "text": result.text,
                                                "session": views.session_view(result.state)}))
            except GeosleuthError as exc:
                await queue.put(_sse("error", {"message": str(exc)}))
            except Exception as exc:  # the session goes on; the page says what broke
                log.exception("chat turn failed")
                await queue.put(_sse("error", {"message": f"internal error ({type(exc).__name__}: {exc})"}))
            finally:
                await queue.put(None)

        # The turn finishes (and is saved) even if the browser goes away mid-stream.
        task = asyncio.ensure_future(turn())
        self._turns.add(task)
        task.add_done_callback(self._turns.discard)

        async def body() -> AsyncIterator[bytes]:
            for item in first:
                yield item
            while (item := await queue.get()) is not None:
                yield item

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # -- routes ----------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def start_session(self, request: Request) -> Response:
        if wrong := _wrong_type(request, "application/octet-stream"):
            return wrong
        name = request.query_params.get("name") or "upload"
        try:
            path = await save_upload(request.stream(), name, self.uploads, max_bytes=self.settings.max_upload_bytes)
            await asyncio.to_thread(check_image, path, name)
        except UploadError as exc:
            return _error(str(exc), exc.status_code)
        return self._stream([], lambda listener: self.sessions.start(str(path), listener))

    async def send_message(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if wrong := _wrong_type(request, "application/json"):
            return wrong
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error('send JSON like {"text": "why not Spain?"}', 400)
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _error("the message is empty; ask a question or give a hint like 'it is in Spain'", 400)
        try:
            await self.sessions.state(session_id)
        except GeosleuthError as exc:
            return _error(str(exc), 404)
        return self._stream([], lambda listener: self.sessions.send(session_id, text, listener))

    async def list_sessions(self, request: Request) -> Response:
        return JSONResponse({"sessions": [views.summary_view(s) for s in await self.sessions.list()]})

    async def _state(self, request: Request) -> Any:
        return await self.sessions.state(request.path_params["session_id"])

    async def get_session(self, request: Request) -> Response:
        try:
            state = await self._state(request)
        except GeosleuthError as exc:
            return _error(str(exc), 404)
        return JSONResponse(views.session_view(state))

    async def image(self, request: Request) -> Response:
        try:
            state = await self._state(request)
        except GeosleuthError as exc:
            return _error(str(exc), 404)
        path = Path(state.image_path)
        if not path.is_file():
            return _error(f"the session's image {state.image_path!r} is no longer on disk", 404)
        return FileResponse(path, headers={"Content-Security-Policy": "default-src 'none'"})

    async def trace_html(self, request: Request) -> Response:
        from geosleuth.agent.trace import trace_html

        try:
            state = await self._state(request)
        except GeosleuthError as exc:
            return _error(str(exc), 404)
        if state.trace is None:
            return HTMLResponse("<p>This session has no trace yet.</p>", status_code=404)
        # The polygons the pipeline's reverse geocoder loaded once (not a second copy for the page).
        land = await asyncio.to_thread(lambda: self.geo.resources.geocoder.boundaries)
        page = trace_html(state.trace, land=land)
        return HTMLResponse(page, headers={"Content-Security-Policy": _TRACE_CSP})

    async def download(self, request: Request) -> Response:
        what = request.path_params["what"]
        if what not in ("trace", "prediction"):
            return _error("downloads are trace.json and prediction.json", 404)
        try:
            state = await self._state(request)
        except GeosleuthError as exc:
            return _error(str(exc), 404)
        obj = state.trace if what == "trace" else state.prediction
        if obj is None:
            return _error(f"session {state.session_id} has no {what} yet", 404)
        name = f"{state.session_id}-{what}.json"
        return Response(obj.model_dump_json(indent=2), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def batch(self, request: Request) -> Response:
        from geosleuth.agent.batch import read_results

        if wrong := _wrong_type(request, "application/octet-stream"):
            return wrong
        name = request.query_params.get("name") or "results.jsonl"
        with tempfile.TemporaryDirectory(prefix="geosleuth-ui-") as folder:
            try:
                path = await save_upload(request.stream(), name, Path(folder),
                                         max_bytes=self.settings.max_upload_bytes)
                records = await asyncio.to_thread(read_results, path)
            except UploadError as exc:
                return _error(str(exc), exc.status_code)
            except GeosleuthError as exc:
                # The message names our temporary copy; name the user's file instead.
                return _error(str(exc).replace(str(path), name), 400)
        return JSONResponse({"name": name, "rows": views.batch_view(records)})

    async def basemap(self, request: Request) -> Response:
        body = await self.basemap_bytes()
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(body, media_type="application/geo+json", headers={**headers, "Content-Encoding": "gzip"})
        return Response(gzip.decompress(body), media_type="application/geo+json", headers=headers)

    async def basemap_bytes(self) -> bytes:
        """The basemap GeoJSON, gzip-compressed (built once, about 1.2 MB raw)."""
        async with self._basemap_lock:
            if self._basemap is None:
                self._basemap = await asyncio.to_thread(self._build_basemap)
        return self._basemap

    def _build_basemap(self) -> bytes:
        from geosleuth.geo.basemap import basemap_geojson

        # The polygons the pipeline's reverse geocoder already loaded: the map shows its borders.
        geojson = basemap_geojson(BASEMAP_TOLERANCE_DEG, boundaries=self.geo.resources.geocoder.boundaries)
        return gzip.compress(json.dumps(geojson, separators=(",", ":")).encode(), mtime=0)  # kept compressed

    async def aclose(self) -> None:
        for task in list(self._turns):
            task.cancel()
        for task in list(self._turns):
            with contextlib.suppress(BaseException):
                await task
        await self.sessions.aclose()


class _SecurityHeaders:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {b"content-security-policy": _CSP.encode(), b"x-content-type-options": b"nosniff",
                         b"referrer-policy": b"no-referrer", b"x-frame-options": b"SAMEORIGIN"}
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def create_app(geo: Geolocator, settings: UISettings) -> Starlette:
    """The ASGI app. Models load on startup (so a bad configuration fails before the first photo)."""
    state = _App(geo, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.sessions.engine()  # loads the models once
        warm = asyncio.ensure_future(state.basemap_bytes())  # ready before the page asks for it
        try:
            yield
        finally:
            warm.cancel()
            await state.aclose()

    sid = "/api/sessions/{session_id:str}"
    routes = [
        Route("/", state.index),
        Route("/api/sessions", state.list_sessions, methods=["GET"]),
        Route("/api/sessions", state.start_session, methods=["POST"]),
        Route(sid, state.get_session),
        Route(sid + "/messages", state.send_message, methods=["POST"]),
        Route(sid + "/image", state.image),
        Route(sid + "/trace.html", state.trace_html),
        Route(sid + "/{what:str}.json", state.download),
        Route("/api/batch", state.batch, methods=["POST"]),
        Route("/api/basemap", state.basemap),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(_SecurityHeaders)]
    if settings.allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts)))
    if settings.token:
        middleware.append(Middleware(TokenMiddleware, token=settings.token))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
