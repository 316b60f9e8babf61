"""Test doubles for the reason stage: a scripted VLM backend and a misbehaving OpenAI-style HTTP server.

Both live only here: product code never fakes model output.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from geosleuth.config import Config
from geosleuth.geo import ReverseGeocoder
from geosleuth.vlm.backends import VLMRequest


def answer_json(**overrides: Any) -> str:
    """A valid GeoAnswer reply (Paris), with fields replaced or removed (value ``...`` removes)."""
    answer: dict[str, Any] = {
        "clues": [{"observation": "street sign in French", "implication": "France or Belgium"}],
        "continent": "Europe",
        "country": "France",
        "region": "Ile-de-France",
        "city": "Paris",
        "latitude": 48.8566,
        "longitude": 2.3522,
        "confidence": 0.6,
    }
    for key, value in overrides.items():
        if value is ...:
            answer.pop(key)
        else:
            answer[key] = value
    return json.dumps(answer)


class ScriptedBackend:
    """Answers each request with the next scripted reply list (or raises the scripted exception).

    A script item is a list of texts (returned as they are) or an exception instance (raised), or a
    callable taking the request and returning either.
    """

    def __init__(self, script: list[Any], model_id: str = "scripted-vlm") -> None:
        self.script = list(script)
        self.model_id = model_id
        self.requests: list[VLMRequest] = []
        self.closed = False

    async def generate(self, request: VLMRequest) -> list[str]:
        self.requests.append(request)
        if not self.script:
            raise AssertionError(f"unexpected request #{len(self.requests)}: the script is used up")
        item = self.script.pop(0)
        if callable(item) and not isinstance(item, BaseException):
            item = item(request)
        if isinstance(item, BaseException):
            raise item
        return list(item)

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture(scope="session")
def geocoder() -> ReverseGeocoder:
    return ReverseGeocoder()


@pytest.fixture
def image() -> Image.Image:
    img = Image.new("RGB", (64, 48), (90, 140, 60))
    for x in range(64):
        img.putpixel((x, x * 48 // 64), (250, 250, 250))
    return img


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """Config with settings given as dotted keys: make_config(**{"vlm.samples_per_variant": 3})."""

    def build(**settings: Any) -> Config:
        tree: dict[str, dict[str, Any]] = {}
        for dotted, value in settings.items():
            section, key = dotted.split(".")
            tree.setdefault(section, {})[key] = value
        return Config.model_validate(tree)

    return build


# ---------------------------------------------------------------- misbehaving OpenAI-style server


def completion_body(*texts: str, model: str = "fake-model", finish_reasons: list[str] | None = None) -> dict[str, Any]:
    reasons = finish_reasons or ["stop"] * len(texts)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": reasons[i]}
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@dataclass
class Reply:
    """One scripted HTTP reply: status, body (dict -> JSON, str/bytes -> raw), an optional delay."""

    status: int = 200
    body: Any = None
    delay_s: float = 0.0
    content_type: str = "application/json"


@dataclass
class FakeServer:
    url: str  # OpenAI base URL (…/v1)
    script: list[Reply | Callable[[dict[str, Any]], Reply]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # {"path", "headers" (lower-case), "json"}
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append(request)
            item = self.script.pop(0) if self.script else Reply(500, {"error": {"message": "script used up"}})
        return item(request) if callable(item) else item


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            headers = {key.lower(): value for key, value in self.headers.items()}
            request = {"path": self.path, "headers": headers, "json": json.loads(raw or b"{}")}
            reply = server.next_reply(request)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if isinstance(reply.body, (dict, list)):
                payload = json.dumps(reply.body).encode()
            elif isinstance(reply.body, str):
                payload = reply.body.encode()
            else:
                payload = reply.body or b""
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

    return Handler


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """An OpenAI-style chat server on 127.0.0.1 that replies as its ``script`` says."""
    state = FakeServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def doubles() -> Any:
    """The helpers above for test modules (conftest modules are not importable in importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        answer_json=answer_json, ScriptedBackend=ScriptedBackend, Reply=Reply, completion_body=completion_body
    )
