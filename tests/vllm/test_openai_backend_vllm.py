"""OpenAIBackend and the reason stage against a real vLLM OpenAI server on CPU (tiny random Qwen2.5-VL).

The weights are random, so the answers are nonsense; what must hold is the plumbing: images as data
URLs, ``n`` samples, and structured output forcing GeoAnswer's schema. Uses the session fixture
``vllm_server`` (tests/vllm/conftest.py: ``base_url``, ``model``); skipped when the vLLM env is absent.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from PIL import Image

from geosleuth.agent.reason import reason
from geosleuth.config import Config
from geosleuth.geo import ReverseGeocoder
from geosleuth.prompts.render import load_template, render
from geosleuth.prompts.schema import SCHEMA_NAME, AnswerParseError, answer_json_schema, answer_skeleton, parse_answer
from geosleuth.types import GalleryNeighbor, RetrievalResult
from geosleuth.vlm.backends import ChatMessage, VLMRequest
from geosleuth.vlm.openai_backend import OpenAIBackend

pytestmark = pytest.mark.vllm

# The fixture's server has a 1024-token context; the zero-shot prompt with the image takes about 440
# of them, and vLLM clamps max_tokens to what is left. A random model fills strings up to their
# maxLength, so about 1 reply in 5 runs out of room before the object closes (measured: 13/16 stop
# on their own). Such a reply is a valid JSON *prefix*; the grammar still held.
MAX_TOKENS = 900


def _ran_out_of_room(text: str) -> bool:
    """True when ``text`` is cut short (ends inside a string or right after a token), not malformed."""
    try:
        json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        return exc.msg.startswith("Unterminated string") or exc.pos >= len(text.rstrip()) - 1
    return False


def _config(server, **prompts) -> Config:
    return Config.model_validate(
        {
            "vlm": {
                "backend": "openai",
                "base_url": server.base_url,
                "server_model": server.model,
                "timeout_s": 120,
                "max_retries": 1,
                "max_new_tokens": MAX_TOKENS,
                "samples_per_variant": 3,
                "temperature": 1.0,
                "max_image_pixels": 112 * 112,
            },
            "prompts": prompts,
        }
    )


def _picture() -> Image.Image:
    picture = Image.new("RGB", (160, 120), (120, 170, 230))
    for x in range(160):
        picture.putpixel((x, 60 + x // 4), (250, 250, 250))
    return picture


def test_structured_output_holds_for_the_answer_schema(vllm_server) -> None:
    config = _config(vllm_server)
    backend = OpenAIBackend(config.vlm, environ={})
    prompt = render(
        load_template("geo_reasoning"), neighbors=[], dissimilar=[], gps_candidates=[], answer_format=answer_skeleton()
    )
    request = VLMRequest(
        messages=[ChatMessage("user", prompt, [_picture()])],
        json_schema=answer_json_schema(),
        n=4,
        temperature=1.0,
        max_tokens=MAX_TOKENS,
        schema_name=SCHEMA_NAME,
    )

    async def run() -> list:
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()

    replies = asyncio.run(run())
    texts = [reply.text for reply in replies]
    assert len(texts) == 4
    parsed = 0
    for reply in replies:
        text = reply.text
        assert text.startswith('{"clues":['), text[:80]  # the schema's first key, no free whitespace
        # A reply is cut short only at the token limit, and the server says so.
        assert reply.cut_off == _ran_out_of_room(text), (reply.finish_reason, text[-80:])
        if reply.cut_off:
            continue
        data = json.loads(text, strict=False)  # xgrammar may put raw control characters in strings
        assert list(data) == list(answer_json_schema()["anyOf"][0]["properties"])
        # Both coordinates or neither: the grammar holds that too (an answer or an abstention).
        assert (data["latitude"] is None) == (data["longitude"] is None), text
        try:
            answer = parse_answer(text)  # the grammar held: keys, types and ranges
        except AnswerParseError as exc:  # the one rule the grammar leaves: a reason of only whitespace
            assert "cannot_tell_because" in str(exc) and not data["cannot_tell_because"].strip(), exc
            continue
        if not answer.abstains:
            assert -90 <= answer.latitude <= 90 and -180 <= answer.longitude <= 180
        assert 0 <= answer.confidence <= 1
        parsed += 1
    assert parsed >= 1, texts  # all four cut short: about 0.2 % by chance


def test_reason_gives_hypotheses_or_clean_failures(vllm_server) -> None:
    # Two variants; the retrieval-augmented one shows 1 neighbour, which keeps it inside 1024 tokens.
    config = _config(vllm_server, neighbor_counts=[0, 1], include_dissimilar=False)
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id=f"g{i}", lat=41.9 + i, lon=12.5 + i, similarity=0.7) for i in range(3)]
    )
    backend = OpenAIBackend(config.vlm, environ={})

    async def run():
        try:
            return await reason(_picture(), retrieval, backend, config, ReverseGeocoder())
        finally:
            await backend.aclose()

    result = asyncio.run(run())
    outcomes = sorted(
        [(h.variant, h.sample_index) for h in result.hypotheses]
        + [(a.variant, a.sample_index) for a in result.abstentions]
        + [(f.variant, f.sample_index) for f in result.failures]
    )
    assert outcomes == [(f"neighbors-{k}", i) for k in (0, 1) for i in range(3)]
    for failure in result.failures:  # a clean failure: why, and the reply or the request error
        assert failure.error and failure.model == vllm_server.model
    for hypothesis in result.hypotheses:
        assert hypothesis.model == vllm_server.model and hypothesis.template_hash
        assert -90 <= hypothesis.lat <= 90
    # Structured output makes most samples usable even with random weights (see MAX_TOKENS).
    assert result.hypotheses or result.abstentions, [f.error for f in result.failures]
