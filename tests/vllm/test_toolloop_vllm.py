"""Tool calling against a real vLLM OpenAI server on CPU (tiny random Qwen2.5-VL).

One server started the way ``geosleuth vlm serve`` starts it for Qwen2.5-VL (``--enable-auto-tool-choice
--tool-call-parser hermes``) runs one tool loop to its end; the session's server (no tool flags)
shows the fallback: the preflight's tool probe finds the server cannot call tools.

The weights are random, and vLLM 0.32 with the hermes parser holds the *name* of a named tool choice
but not its arguments to the tool's schema (measured: a named call comes back with arguments such as
``"13312"``). So what must hold is the plumbing: the tools and the named choice reach the server, its
``tool_calls`` are parsed, a call whose arguments are not an object is told to the model as a failed
call (the server accepts the assistant tool-call turn and the tool result that follow), the last
call is forced to ``submit``, and the loop ends at ``submit`` or its tool-call budget. ``tool_choice =
"required"`` (the loop's default) comes back as a parsed call because the backend sends
``parallel_tool_calls = false``; without it the hermes path returned ``<tool_call>`` text and no calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from geosleuth.agent.toolloop.fallback import probe_tool_support
from geosleuth.agent.toolloop.graph import LoopContext, build_tool_loop
from geosleuth.agent.toolloop.prompts import tool_specs
from geosleuth.agent.toolloop.state import STOP_SUBMITTED, STOP_TOOL_CALLS, Budget
from geosleuth.agent.tools.registry import Tool, ToolContext, ToolObservation, ToolRegistry
from geosleuth.config import Config
from geosleuth.types import Hypothesis, RetrievalResult
from geosleuth.vlm.backends import ChatMessage, VLMRequest
from geosleuth.vlm.openai_backend import OpenAIBackend
from geosleuth.vlm.server import VLLMServer, tool_call_parser_for

pytestmark = pytest.mark.vllm

# As tests/vllm/conftest.py serves the tiny model (importlib mode cannot import conftest).
SERVED_NAME = "tiny-qwen2.5-vl"
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


class NoteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(max_length=8)  # a random model fills strings to their limit: keep it short


class NoteTool(Tool):
    name = "note"
    description = "write down a clue"
    arguments = NoteArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        return ToolObservation(text="noted", data={"note": getattr(args, "note", "")})


class SubmitNoteTool(Tool):
    name = "submit"
    description = "give the final answer"
    arguments = NoteArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        answer = Hypothesis(lat=1.0, lon=2.0, confidence=0.5, raw_text=getattr(args, "note", ""),
                            template_id="geo_tools", template_hash="", model=SERVED_NAME, variant="tools")
        return ToolObservation(text="submitted", answer=answer)


@pytest.fixture(scope="module")
def tool_server(vllm_python: str, tiny_qwen_vl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second server, with tool calling on as `vlm serve` turns it on for Qwen2.5-VL."""
    parser = tool_call_parser_for("Qwen/Qwen2.5-VL-7B-Instruct")
    assert parser == "hermes"
    server = VLLMServer(
        tiny_qwen_vl_dir, python=vllm_python, host="127.0.0.1", port=0, served_model_name=SERVED_NAME,
        max_model_len=4096, images_per_prompt=1, dtype="float32", extra_args=["--enforce-eager", "--seed", "0"],
        tool_call_parser=parser, env=SERVER_ENV, startup_timeout=300,
        log_path=tmp_path_factory.mktemp("vllm-tools-log") / "vllm-server.log",
    )
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


def _backend(base_url: str) -> OpenAIBackend:
    config = Config.model_validate({"vlm": {"backend": "openai", "base_url": base_url, "server_model": SERVED_NAME,
                                            "timeout_s": 120, "max_retries": 1, "max_image_pixels": 112 * 112}})
    return OpenAIBackend(config.vlm, environ={})


def test_one_tool_loop_completes_against_a_real_vllm_server(tool_server: str) -> None:
    backend = _backend(tool_server)
    assert asyncio.run(probe_tool_support(backend)) is None
    registry = ToolRegistry([NoteTool(), SubmitNoteTool()])
    picture = Image.new("RGB", (112, 84), (120, 170, 230))
    context = ToolContext(image=picture, embeddings=None, retrieval=RetrievalResult(),  # type: ignore[arg-type]
                          resources=None)  # type: ignore[arg-type]
    ctx = LoopContext(
        backend=backend, registry=registry, tool_context=context, specs=tool_specs(registry),
        budget=Budget(max_tool_calls=2, max_tokens=2000, max_seconds=600), max_new_tokens=200, temperature=1.0,
        clock=(time.time(), time.perf_counter()),
        # A named tool, so the turns are known (the random model picks among tools at random).
        tool_choice="note",
    )
    start = {"messages": [ChatMessage("user", "Where was this photo taken? Use the tools.", [picture])],
             "started": time.perf_counter(), "tool_calls": 0, "tokens": 0, "turns": 0, "candidates": []}

    async def run() -> dict:
        try:
            return await build_tool_loop().ainvoke(start, context=ctx)
        finally:
            await backend.aclose()

    final = asyncio.run(run())
    model_turns = [e for e in final["events"] if e.step == "tool-loop:model"]
    calls = [e for e in final["events"] if e.step.startswith("tool:")]
    # both turns reached the server and came back as parsed calls of the named tool (the second
    # request carried the first turn's tool call and its result: the server accepted that history)
    assert [e.error for e in model_turns] == [None, None], [e.error for e in model_turns]
    assert [e.inputs["tool_choice"] for e in model_turns] == ["note", "submit"]
    assert [[c["name"] for c in e.outputs["tool_calls"]] for e in model_turns] == [["note"], ["submit"]]
    assert [e.step for e in calls] == ["tool:note", "tool:submit"]
    for turn, call in zip(model_turns, calls, strict=True):
        assert turn.outputs["tokens_counted"] == "reported by the backend" and turn.outputs["tokens"] > 0
        if turn.outputs["tool_calls"][0]["arguments"] is None:  # told to the model, not a crash
            assert "not a JSON object" in (call.error or ""), call.error
    assert final["stop_reason"] in (STOP_SUBMITTED, STOP_TOOL_CALLS)
    assert (final.get("answer") is not None) == (final["stop_reason"] == STOP_SUBMITTED)


def test_required_tool_choice_comes_back_as_a_parsed_call(tool_server: str) -> None:
    registry = ToolRegistry([NoteTool(), SubmitNoteTool()])
    request = VLMRequest([ChatMessage("user", "Call a tool.")], n=1, temperature=1.0, max_tokens=64,
                         tools=tool_specs(registry), tool_choice="required")
    backend = _backend(tool_server)

    async def run() -> list:
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()

    [reply] = asyncio.run(run())
    assert [call.name in ("note", "submit") for call in reply.tool_calls] == [True], (reply.text, reply.tool_calls)


def test_a_server_without_tool_flags_is_found_by_the_preflight_probe(vllm_server) -> None:
    reason = asyncio.run(probe_tool_support(_backend(vllm_server.base_url)))
    assert reason is not None and "tool-call-parser" in reason
