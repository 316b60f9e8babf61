"""Tool calls over the OpenAI tools API against a local fake server, vLLM's refusal of tools, and the
tool-call parser `vlm serve` picks per model family."""

from __future__ import annotations

import asyncio

import pytest

from geosleuth.vlm.backends import ChatMessage, ToolCall, ToolSpec, ToolsUnsupportedError, VLMRequest
from geosleuth.vlm.openai_backend import OpenAIBackend
from geosleuth.vlm.server import VLLMServer, tool_call_parser_for

ZOOM = ToolSpec("zoom", "look closer", {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]})


def _backend(make_config, url: str) -> OpenAIBackend:
    config = make_config(**{"vlm.base_url": url, "vlm.server_model": "fake-model", "vlm.max_retries": 0})
    return OpenAIBackend(config.vlm, backoff_s=0.01, environ={})


def _tool_reply(*calls: tuple[str, str], usage: int = 17) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": f"call-{i}", "type": "function", "function": {"name": name, "arguments": args}}
                           for i, (name, args) in enumerate(calls)]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": usage, "total_tokens": 5 + usage},
    }


def _run(backend: OpenAIBackend, request: VLMRequest):
    async def go():
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_tools_and_history_go_out_in_the_openai_shape_and_calls_come_back(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(body=_tool_reply(("zoom", '{"x": 0.5}'), ("zoom", "13312")))]
    earlier = ToolCall("zoom", {"x": 0.1}, '{"x": 0.1}', id="call-a")
    request = VLMRequest(
        messages=[ChatMessage("user", "where?"), ChatMessage("assistant", "", tool_calls=[earlier]),
                  ChatMessage("tool", "a crop", tool_call_id="call-a")],
        tools=[ZOOM], tool_choice="zoom", max_tokens=32,
    )
    [reply] = _run(_backend(make_config, fake_server.url), request)
    body = fake_server.requests[0]["json"]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "zoom", "description": "look closer", "parameters": ZOOM.parameters}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "zoom"}}
    assert body["parallel_tool_calls"] is False
    assert "response_format" not in body
    assistant, tool = body["messages"][1:]
    assert assistant["tool_calls"] == [{"id": "call-a", "type": "function",
                                        "function": {"name": "zoom", "arguments": '{"x": 0.1}'}}]
    assert tool == {"role": "tool", "tool_call_id": "call-a", "content": "a crop"}
    # a finished tool-call turn is a complete reply; the server's token count is kept
    assert reply.finish_reason == "stop" and reply.tokens == 17
    assert [(c.name, c.arguments, c.raw, c.id) for c in reply.tool_calls] == [
        ("zoom", {"x": 0.5}, '{"x": 0.5}', "call-0"), ("zoom", None, "13312", "call-1")]


def test_required_is_sent_as_is(doubles, fake_server, make_config) -> None:
    fake_server.script = [doubles.Reply(body=_tool_reply(("zoom", "{}")))]
    _run(_backend(make_config, fake_server.url), VLMRequest([ChatMessage("user", "x")], tools=[ZOOM],
                                                            tool_choice="required"))
    assert fake_server.requests[0]["json"]["tool_choice"] == "required"


def test_a_server_without_tool_calling_is_named_as_such(doubles, fake_server, make_config) -> None:
    message = 'tool_choice="required" requires --tool-call-parser to be set'  # vLLM 0.32's words
    fake_server.script = [doubles.Reply(400, {"error": {"message": message}})]
    with pytest.raises(ToolsUnsupportedError, match="cannot call tools.*geosleuth vlm serve"):
        _run(_backend(make_config, fake_server.url), VLMRequest([ChatMessage("user", "x")], tools=[ZOOM]))
    assert len(fake_server.requests) == 1  # not retried


def test_a_request_takes_tools_or_a_schema_not_both() -> None:
    with pytest.raises(ValueError, match="tools or a JSON schema"):
        VLMRequest([ChatMessage("user", "x")], tools=[ZOOM], json_schema={"type": "object"})


@pytest.mark.parametrize(("model", "setting", "parser"), [
    ("Qwen/Qwen2.5-VL-7B-Instruct", "auto", "hermes"),
    ("Qwen/Qwen2.5-VL-3B-Instruct", "auto", "hermes"),
    ("meta-llama/Llama-3.1-8B-Instruct", "auto", "llama3_json"),
    ("llava-hf/llava-interleave-qwen-0.5b-hf", "none", None),
    ("some/unknown-vlm", "auto", None),
    ("some/unknown-vlm", "pythonic", "pythonic"),
])
def test_the_tool_call_parser_follows_the_model_family(model: str, setting: str, parser: str | None) -> None:
    assert tool_call_parser_for(model, setting) == parser


def test_the_server_command_turns_tool_calling_on_only_with_a_parser() -> None:
    with_tools = VLLMServer("Qwen/Qwen2.5-VL-7B-Instruct", port=8000, tool_call_parser="hermes").command()
    at = with_tools.index("--enable-auto-tool-choice")
    assert with_tools[at + 1: at + 3] == ["--tool-call-parser", "hermes"]
    assert "--enable-auto-tool-choice" not in VLLMServer("Qwen/Qwen2.5-VL-7B-Instruct", port=8000).command()
