"""OpenAIBackend against a misbehaving local HTTP server: retries, timeouts, refusals, bad replies."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import pytest
from PIL import Image

from geosleuth.agent.reason import reason
from geosleuth.errors import VLMError
from geosleuth.types import RetrievalResult
from geosleuth.vlm.backends import ChatMessage, VLMRejectedError, VLMRequest, VLMUnavailableError
from geosleuth.vlm.openai_backend import OpenAIBackend


def _backend(make_config, url: str, **settings) -> OpenAIBackend:
    values = {"vlm.base_url": url, "vlm.server_model": "fake-model", "vlm.max_retries": 2, "vlm.timeout_s": 5.0}
    values.update(settings)
    return OpenAIBackend(make_config(**values).vlm, backoff_s=0.01, environ={})


def _request(image: Image.Image | None = None, n: int = 1) -> VLMRequest:
    return VLMRequest(
        messages=[ChatMessage("user", "where?", [image] if image is not None else [])],
        json_schema={"type": "object"},
        n=n,
        temperature=0.5,
        max_tokens=64,
    )


async def _generate(backend: OpenAIBackend, request: VLMRequest) -> list[str]:
    try:
        return [reply.text for reply in await backend.generate(request)]
    finally:
        await backend.aclose()


def test_request_carries_image_schema_samples_and_key(doubles, fake_server, make_config, image) -> None:
    fake_server.script = [doubles.Reply(body=doubles.completion_body("a", "b", "c"))]
    config = make_config(
        **{"vlm.base_url": fake_server.url, "vlm.server_model": "fake-model", "vlm.max_image_pixels": 64 * 64}
    )
    backend = OpenAIBackend(config.vlm, environ={config.vlm.api_key_env: "sekret-key"})
    big = Image.new("RGB", (640, 480), (10, 20, 30))
    assert asyncio.run(_generate(backend, _request(big, n=3))) == ["a", "b", "c"]
    [sent] = fake_server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sekret-key"
    body = sent["json"]
    assert body["model"] == "fake-model" and body["n"] == 3 and body["max_tokens"] == 64
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "where?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent_image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent_image.width * sent_image.height <= 64 * 64  # downscaled before sending
    assert abs(sent_image.width / sent_image.height - 640 / 480) < 0.1  # aspect ratio kept
    assert "sekret" not in repr(backend)


def test_missing_key_variable_sends_empty_placeholder(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(body=doubles.completion_body("x"))]
    asyncio.run(_generate(_backend(make_config, fake_server.url), _request()))
    assert fake_server.requests[0]["headers"]["authorization"] == "Bearer EMPTY"


def test_connection_refused_is_retried_then_unavailable(closed_port_url, make_config) -> None:
    backend = _backend(make_config, closed_port_url, **{"vlm.max_retries": 2})
    with pytest.raises(VLMUnavailableError, match="after 3 attempt") as info:
        asyncio.run(_generate(backend, _request()))
    assert info.value.attempts == 3 and backend.attempts_made == 3
    assert closed_port_url in str(info.value) and "geosleuth vlm serve" in str(info.value)


def test_slow_reply_times_out_each_attempt(doubles, fake_server, make_config) -> None:
    slow = doubles.Reply(body=doubles.completion_body("late"), delay_s=1.0)
    fake_server.script = [slow, slow]
    backend = _backend(make_config, fake_server.url, **{"vlm.timeout_s": 0.2, "vlm.max_retries": 1})
    started = time.monotonic()
    with pytest.raises(VLMUnavailableError, match="timed out after 0.2 s"):
        asyncio.run(_generate(backend, _request()))
    assert time.monotonic() - started < 1.5  # the client gave up; it did not wait for the server
    assert backend.attempts_made == 2 and len(fake_server.requests) == 2


def test_server_error_then_success(doubles, fake_server, make_config) -> None:
    fake_server.script = [
        doubles.Reply(500, {"error": {"message": "engine hiccup"}}),
        doubles.Reply(503, {"error": {"message": "busy"}}),
        doubles.Reply(body=doubles.completion_body("fine")),
    ]
    backend = _backend(make_config, fake_server.url, **{"vlm.max_retries": 2})
    assert asyncio.run(_generate(backend, _request())) == ["fine"]
    assert len(fake_server.requests) == 3


def test_server_errors_exhaust_retries(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(500, {"error": {"message": "engine dead"}})] * 2
    backend = _backend(make_config, fake_server.url, **{"vlm.max_retries": 1})
    with pytest.raises(VLMUnavailableError, match="HTTP 500: engine dead"):
        asyncio.run(_generate(backend, _request()))
    assert len(fake_server.requests) == 2


def test_unreadable_body_is_retried(doubles, fake_server, make_config) -> None:
    fake_server.script = [
        doubles.Reply(body="<html>proxy error</html>", content_type="text/html"),
        doubles.Reply(body="{not json", content_type="application/json"),
        doubles.Reply(body=doubles.completion_body("ok")),
    ]
    backend = _backend(make_config, fake_server.url, **{"vlm.max_retries": 2})
    assert asyncio.run(_generate(backend, _request())) == ["ok"]
    assert len(fake_server.requests) == 3


def test_bad_request_is_not_retried(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(400, {"error": {"message": "prompt is too long"}})]
    backend = _backend(make_config, fake_server.url)
    with pytest.raises(VLMRejectedError, match="prompt is too long") as info:
        asyncio.run(_generate(backend, _request()))
    assert info.value.status_code == 400 and len(fake_server.requests) == 1


@pytest.mark.parametrize(("status", "hint"), [(404, "vlm.server_model"), (401, "GEOSLEUTH_VLM_API_KEY")])
def test_misconfiguration_raises_plain_vlm_error(doubles, fake_server, make_config, status, hint) -> None:
    fake_server.script = [doubles.Reply(status, {"error": {"message": "nope"}})]
    with pytest.raises(VLMError, match=hint) as info:
        asyncio.run(_generate(_backend(make_config, fake_server.url), _request()))
    assert not isinstance(info.value, (VLMUnavailableError, VLMRejectedError))  # reason() lets it propagate
    assert len(fake_server.requests) == 1


def test_server_ignoring_n_is_topped_up(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(body=doubles.completion_body(f"s{i}")) for i in range(3)]
    backend = _backend(make_config, fake_server.url)
    assert asyncio.run(_generate(backend, _request(n=3))) == ["s0", "s1", "s2"]
    assert [r["json"]["n"] for r in fake_server.requests] == [3, 2, 1]


def test_concurrency_limit_holds(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(body=doubles.completion_body("x"), delay_s=0.15) for _ in range(6)]
    backend = _backend(make_config, fake_server.url, **{"vlm.concurrency": 2})

    async def many() -> float:
        started = time.monotonic()
        try:
            await asyncio.gather(*(backend.generate(_request()) for _ in range(6)))
        finally:
            await backend.aclose()
        return time.monotonic() - started

    elapsed = asyncio.run(many())
    assert elapsed >= 0.4  # 6 requests, 2 at a time, 0.15 s each: at least 3 rounds


def test_backend_survives_a_new_event_loop(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(body=doubles.completion_body(text)) for text in ("one", "two")]
    backend = _backend(make_config, fake_server.url)
    assert [r.text for r in asyncio.run(backend.generate(_request()))] == ["one"]  # loop 1 ends without aclose
    assert asyncio.run(_generate(backend, _request())) == ["two"]


# ---------------------------------------------------------------- through the reason stage


def test_reason_records_malformed_and_coordinate_less_replies_as_failures(
    doubles, fake_server, make_config, geocoder, image
) -> None:
    fake_server.script = [
        doubles.Reply(body=doubles.completion_body('{"clues": [', doubles.answer_json(longitude=...))),
        doubles.Reply(body=doubles.completion_body("still broken")),
        doubles.Reply(body=doubles.completion_body(doubles.answer_json(latitude=None))),
    ]
    config = make_config(
        **{
            "vlm.base_url": fake_server.url, "vlm.server_model": "fake-model", "vlm.max_retries": 0,
            "prompts.neighbor_counts": [0], "vlm.samples_per_variant": 2,
        }
    )
    backend = OpenAIBackend(config.vlm, environ={})

    async def run():
        try:
            return await reason(image, RetrievalResult(), backend, config, geocoder)
        finally:
            await backend.aclose()

    result = asyncio.run(run())
    assert result.hypotheses == []
    assert [f.sample_index for f in result.failures] == [0, 1]
    malformed, no_longitude = result.failures
    assert malformed.raw_text == '{"clues": [' and "not valid JSON" in malformed.error
    assert "longitude: missing" in no_longitude.error
    assert len(fake_server.requests) == 3  # one request for 2 samples, one repair each
    assert all(f.model == "fake-model" for f in result.failures)


def test_reason_with_server_down_records_failures(closed_port_url, make_config, geocoder, image) -> None:
    config = make_config(
        **{
            "vlm.base_url": closed_port_url, "vlm.max_retries": 1,
            "prompts.neighbor_counts": [0], "vlm.samples_per_variant": 2,
        }
    )
    backend = OpenAIBackend(config.vlm, backoff_s=0.01, environ={})
    result = asyncio.run(reason(image, RetrievalResult(), backend, config, geocoder))
    assert result.hypotheses == [] and len(result.failures) == 2
    assert all("after 2 attempt" in f.error for f in result.failures)
    assert backend.attempts_made == 2


def test_finish_reasons_come_through(doubles, fake_server, make_config) -> None:
    body = doubles.completion_body("done", '{"clues":[', finish_reasons=["stop", "length"])
    fake_server.script = [doubles.Reply(body=body)]
    config = make_config(**{"vlm.base_url": fake_server.url, "vlm.server_model": "fake-model"})
    backend = OpenAIBackend(config.vlm, environ={})

    async def run() -> list:
        try:
            return await backend.generate(_request(n=2))
        finally:
            await backend.aclose()

    first, second = asyncio.run(run())
    assert (first.finish_reason, first.cut_off) == ("stop", False)
    assert (second.finish_reason, second.cut_off) == ("length", True)
def test_the_client_of_a_finished_event_loop_is_closed_not_dropped(doubles, fake_server, make_config) -> None:
    """Two asyncio.run calls: the first loop's HTTP client is closed when that loop ends, before the
    second call makes its own."""
    fake_server.script = [doubles.Reply(body=doubles.completion_body(text)) for text in ("a", "b")]
    backend = _backend(make_config, fake_server.url)
    assert [reply.text for reply in asyncio.run(backend.generate(_request()))] == ["a"]
    first = backend._client
    assert first is not None and first.is_closed(), "closed when its loop shut down"
    assert asyncio.run(_generate(backend, _request())) == ["b"]
    assert backend._client is None
