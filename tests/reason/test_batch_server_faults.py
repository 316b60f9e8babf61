"""`geosleuth batch` (real pipeline, tiny models) against a misbehaving local OpenAI-style server: a
server that answers 503 for a while is bridged by retries; one slower than the timeout stops the run
by the circuit breaker, with no degraded line written."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from geosleuth.cli import app

runner = CliRunner()


def _photos(folder: Path, count: int) -> Path:
    from geosleuth.testing.photos import write_photo

    for i in range(count):
        write_photo(folder / f"p{i}.jpg")
    return folder


def _config(write_tiny_config, folder: Path, url: str, **vlm: Any) -> Path:
    settings = {"backend": "openai", "base_url": url, "server_model": "fake-model", "samples_per_variant": 1,
                "concurrency": 2, "max_retries": 3, "timeout_s": 5.0}
    settings.update(vlm)
    return write_tiny_config(folder, retrieval={"k_gps": 10}, vlm=settings, prompts={"neighbor_counts": [0]})


def test_a_server_answering_503_for_a_while_is_bridged_by_retries(
    doubles, fake_server, write_tiny_config, tmp_path: Path
) -> None:
    outage_s = 1.0  # the backend's retries wait at least 0.25 + 0.5 + 1 s (jittered backoff) in total
    lock = threading.Lock()
    first_photo_request: list[float] = []
    statuses: list[int] = []

    def reply(request: dict[str, Any]) -> Any:
        is_preflight = request["json"].get("max_tokens") == 4 and "response_format" not in request["json"]
        with lock:
            if not is_preflight and not first_photo_request:
                first_photo_request.append(time.monotonic())
            down = bool(first_photo_request) and time.monotonic() - first_photo_request[0] < outage_s
            statuses.append(503 if down else 200)
        if down:
            return doubles.Reply(503, {"error": {"message": "model is loading"}})
        return doubles.Reply(body=doubles.completion_body(doubles.answer_json()))

    fake_server.script = [reply] * 200
    config = _config(write_tiny_config, tmp_path, fake_server.url)
    out = tmp_path / "r.jsonl"
    result = runner.invoke(app, ["-c", str(config), "batch", str(_photos(tmp_path / "photos", 4)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == [f"p{i}.jpg" for i in range(4)]
    assert {line["prediction"]["status"] for line in lines} == {"ok"}
    assert all("vlm" in line["prediction"]["sources_used"] for line in lines)
    assert 503 in statuses, "the outage really happened"


def test_a_server_slower_than_the_timeout_stops_the_run_without_degraded_lines(
    doubles, fake_server, write_tiny_config, tmp_path: Path
) -> None:
    fast = doubles.Reply(body=doubles.completion_body("ok"))
    slow = doubles.Reply(body=doubles.completion_body(doubles.answer_json()), delay_s=1.5)
    fake_server.script = [fast] + [slow] * 50  # the preflight answers; then every request is too slow
    config = _config(write_tiny_config, tmp_path, fake_server.url, timeout_s=0.3, max_retries=0)
    out = tmp_path / "r.jsonl"
    photos = _photos(tmp_path / "photos", 6)
    result = runner.invoke(app, ["-c", str(config), "batch", str(photos), "--out", str(out), "-j", "1"])
    assert result.exit_code == 4, result.output
    assert "3 images in a row came back with missing vlm" in result.stdout
    assert "--resume" in result.stderr
    assert out.read_text() == "", "no answer made without the VLM was written"


def test_no_server_running_stops_batch_and_locate_before_the_first_photo(
    closed_port_url, write_tiny_config, tmp_path: Path
) -> None:
    """The issue's reproduction: `--set vlm.backend=openai --set vlm.base_url=...` with no server."""
    config = _config(write_tiny_config, tmp_path, "http://127.0.0.1:8000/v1", max_retries=0)  # --set overrides
    photos = _photos(tmp_path / "photos", 3)
    out = tmp_path / "r.jsonl"
    flags = ["-c", str(config), "--set", f"vlm.base_url={closed_port_url}"]
    for command in (["batch", str(photos), "--out", str(out)], ["locate", str(photos / "p0.jpg")]):
        result = runner.invoke(app, [*flags, *command])
        assert result.exit_code == 4, result.output
        message = " ".join(result.stderr.split())
        assert "preflight failed" in message and closed_port_url in message and "geosleuth vlm serve" in message
    assert not out.exists() or out.read_text() == ""


def test_preflight_sends_one_small_real_request(doubles, fake_server, make_config) -> None:
    import asyncio

    from geosleuth.vlm.openai_backend import OpenAIBackend
    from geosleuth.vlm.preflight import check_server_answers

    fake_server.script = [doubles.Reply(body=doubles.completion_body("Paris"))]
    config = make_config(**{"vlm.base_url": fake_server.url, "vlm.server_model": "fake-model"})
    backend = OpenAIBackend(config.vlm, environ={})

    async def check() -> None:
        try:
            await check_server_answers(backend, config.vlm)
        finally:
            await backend.aclose()

    asyncio.run(check())
    [sent] = fake_server.requests
    body = sent["json"]
    assert body["n"] == 1 and body["max_tokens"] == 4 and body["model"] == "fake-model"
    assert body["messages"][0]["content"][0]["type"] == "image_url"
