"""The reason ⇄ tools loop (agent/toolloop/graph.py) with a scripted backend and test-only tools:
it stops at each budget, a failed call is an observation for the model, and the trace records
every model turn and every call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict

from geosleuth.agent.toolloop.graph import LoopContext, build_tool_loop
from geosleuth.agent.toolloop.prompts import tool_specs
from geosleuth.agent.toolloop.state import (
    STOP_SECONDS,
    STOP_SUBMITTED,
    STOP_TOKENS,
    STOP_TOOL_CALLS,
    STOP_VLM_ERROR,
    Budget,
)
from geosleuth.agent.tools.registry import Tool, ToolContext, ToolError, ToolObservation, ToolRegistry
from geosleuth.types import Candidate, CandidateSource, Hypothesis, RetrievalResult
from geosleuth.vlm.backends import ChatMessage, ToolCall, VLMReply, VLMRequest, VLMUnavailableError
from geosleuth.vlm.tool_calling import action_schema

# ---------------------------------------------------------------------------------------------
# Test-only tools and a scripted backend


class PointArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float
    lon: float


class LookTool(Tool):
    """Proposes the point it is given (as a GPS-gallery candidate)."""

    name = "look"
    description = "look at a point"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, PointArgs)
        candidate = Candidate(lat=args.lat, lon=args.lon, source=CandidateSource.GPS_GALLERY, source_ref="look")
        return ToolObservation(text=f"looked at {args.lat}, {args.lon}", data={"n": 1}, candidates=(candidate,))


class RefuseTool(Tool):
    name = "refuse"
    description = "always refuses"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        raise ToolError("refuse: the box lies outside the photo; give one inside it")


class CrashTool(Tool):
    name = "crash"
    description = "has a bug"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        raise ZeroDivisionError("a bug in the tool")


class SlowTool(Tool):
    name = "slow"
    description = "takes its time"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        time.sleep(0.6)
        return ToolObservation(text="done")


class SubmitTool(Tool):
    name = "submit"
    description = "final answer"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, PointArgs)
        hypothesis = Hypothesis(lat=args.lat, lon=args.lon, confidence=0.5, raw_text="{}", template_id="geo_tools",
                                template_hash="h", model="scripted", variant="tools")
        return ToolObservation(text="submitted", answer=hypothesis)


def call(name: str, arguments: dict[str, Any] | None = None, raw: str | None = None) -> ToolCall:
    return ToolCall(name=name, arguments=arguments, raw=raw if raw is not None else json.dumps(arguments))


class ScriptedToolVLM:
    """Answers each request with the next scripted reply (the last one repeats); ``native`` says
    whether it takes tools itself (like the OpenAI backend) or gets action schemas."""

    def __init__(self, script: Sequence[VLMReply | Callable[[], Any]], *, native: bool = True,
                 model_id: str = "scripted") -> None:
        self.script = list(script)
        self.native_tool_calls = native
        self.model_id = model_id
        self.requests: list[VLMRequest] = []

    async def generate(self, request: VLMRequest) -> list[VLMReply]:
        self.requests.append(request)
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        if callable(step):
            result = step()
            if asyncio.iscoroutine(result):
                result = await result
            return [result]
        return [step]

    async def aclose(self) -> None:
        pass


def reply(*calls: ToolCall, tokens: int | None = 10) -> VLMReply:
    return VLMReply(text="", finish_reason="stop", tokens=tokens, tool_calls=tuple(calls))


def run_loop(backend: Any, *, tools: Sequence[Tool] = (), max_tool_calls: int = 8, max_tokens: int = 10_000,
             max_seconds: float = 30.0, max_new_tokens: int = 64) -> dict[str, Any]:
    registry = ToolRegistry([LookTool(), RefuseTool(), CrashTool(), SubmitTool(), *tools])
    context = ToolContext(image=Image.new("RGB", (32, 24)), embeddings=None, retrieval=RetrievalResult(),
                          resources=None)  # type: ignore[arg-type]
    ctx = LoopContext(
        backend=backend, registry=registry, tool_context=context, specs=tool_specs(registry),
        budget=Budget(max_tool_calls, max_tokens, max_seconds), max_new_tokens=max_new_tokens, temperature=0.0,
        clock=(time.time(), time.perf_counter()),
    )
    start = {"messages": [ChatMessage("user", "where?", [Image.new("RGB", (32, 24))])],
             "started": time.perf_counter(), "tool_calls": 0,
             "tokens": 0, "turns": 0, "candidates": []}
    return asyncio.run(build_tool_loop().ainvoke(start, context=ctx, config={"recursion_limit": 100}))


def tool_events(final: dict[str, Any]) -> list[Any]:
    return [e for e in final["events"] if e.step.startswith("tool:")]


# ---------------------------------------------------------------------------------------------
# Budgets


def test_the_loop_stops_when_the_tool_call_budget_is_spent() -> None:
    backend = ScriptedToolVLM([reply(call("look", {"lat": 1.0, "lon": 2.0}))])
    final = run_loop(backend, max_tool_calls=3)
    assert final["stop_reason"] == STOP_TOOL_CALLS
    assert final.get("answer") is None
    assert [e.step for e in tool_events(final)] == ["tool:look"] * 3
    assert final["tool_calls"] == 3
    # the last call the budget allows is asked to be the answer
    assert [r.tool_choice for r in backend.requests] == ["required", "required", "submit"]


def test_the_loop_stops_when_the_token_budget_is_spent() -> None:
    backend = ScriptedToolVLM([reply(call("look", {"lat": 1.0, "lon": 2.0}), tokens=40)])
    final = run_loop(backend, max_tokens=100, max_new_tokens=64)
    assert final["stop_reason"] == STOP_TOKENS
    assert final["tokens"] == 120  # three turns of 40
    # each turn may generate at most what is left of the budget
    assert [r.max_tokens for r in backend.requests] == [64, 60, 20]


def test_a_call_whose_tokens_spend_the_budget_still_runs() -> None:
    backend = ScriptedToolVLM([reply(call("look", {"lat": 1.0, "lon": 2.0}), tokens=60),
                               reply(call("submit", {"lat": 3.0, "lon": 4.0}), tokens=40)])
    final = run_loop(backend, max_tokens=100, max_new_tokens=64)
    assert final["stop_reason"] == STOP_SUBMITTED and final["tokens"] == 100


def test_a_backend_that_does_not_count_tokens_is_charged_each_turns_limit() -> None:
    backend = ScriptedToolVLM([reply(call("look", {"lat": 1.0, "lon": 2.0}), tokens=None)])
    final = run_loop(backend, max_tokens=100, max_new_tokens=50)
    assert final["stop_reason"] == STOP_TOKENS
    assert len(backend.requests) == 2


def test_the_loop_stops_when_a_model_turn_outlasts_the_wall_time_budget() -> None:
    async def hang() -> VLMReply:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    backend = ScriptedToolVLM([reply(call("look", {"lat": 1.0, "lon": 2.0})), hang])
    started = time.perf_counter()
    final = run_loop(backend, max_seconds=0.5)
    assert time.perf_counter() - started < 10
    assert final["stop_reason"] == STOP_SECONDS
    model_events = [e for e in final["events"] if e.step == "tool-loop:model"]
    assert "wall-time budget" in (model_events[-1].error or "")


def test_the_loop_stops_when_a_tool_call_outlasts_the_wall_time_budget() -> None:
    backend = ScriptedToolVLM([reply(call("slow", {"lat": 1.0, "lon": 2.0}))])
    final = run_loop(backend, tools=[SlowTool()], max_seconds=0.3)
    assert final["stop_reason"] == STOP_SECONDS
    assert tool_events(final)[0].error is not None


def test_a_failed_vlm_request_ends_the_loop_and_says_why() -> None:
    def down() -> VLMReply:
        raise VLMUnavailableError("connection refused", attempts=1)

    final = run_loop(ScriptedToolVLM([down]))
    assert final["stop_reason"] == STOP_VLM_ERROR
    assert "connection refused" in final["error"]


# ---------------------------------------------------------------------------------------------
# Failed calls are observations; the trace records every call


def test_failed_calls_become_observations_and_the_model_can_still_submit() -> None:
    backend = ScriptedToolVLM([
        reply(call("refuse", {"lat": 1.0, "lon": 2.0})),
        reply(call("nowhere", {"lat": 1.0, "lon": 2.0})),
        reply(call("look", None, raw='{"lat": 1.0, "lo')),
        reply(call("look", {"latitude": 1.0})),
        reply(call("crash", {"lat": 1.0, "lon": 2.0})),
        VLMReply(text="I think it is Paris", finish_reason="stop", tokens=5),
        reply(call("submit", {"lat": 48.85, "lon": 2.35})),
    ])
    final = run_loop(backend)
    assert final["stop_reason"] == STOP_SUBMITTED
    assert isinstance(final["answer"], Hypothesis) and final["answer"].lat == 48.85
    events = tool_events(final)
    assert [e.step for e in events] == [
        "tool:refuse", "tool:nowhere", "tool:look", "tool:look", "tool:crash", "tool:invalid", "tool:submit",
    ]
    errors = [e.error for e in events[:-1]]
    assert all(errors)
    assert "outside the photo" in errors[0]
    assert "there is no tool 'nowhere'" in errors[1]
    assert "not a JSON object" in errors[2]
    assert "invalid arguments" in errors[3]
    assert "ZeroDivisionError" in errors[4]
    assert "not a tool call" in errors[5]
    # the model read each failure as the result of its call
    last_messages = backend.requests[-1].messages
    tool_messages = [m for m in last_messages if m.role == "tool"]
    assert [m.text.startswith("error: ") for m in tool_messages] == [True] * 5
    assert tool_messages[0].text == f"error: {errors[0]}"
    # each result answers its call; the reply that called nothing is answered as the user, and a
    # nameless call is never sent back as a tool call
    assert [m.tool_call_id for m in tool_messages] == [
        m.tool_calls[0].id for m in last_messages if m.role == "assistant" and m.tool_calls
    ]
    assert last_messages[-1].role == "user" and "not a tool call" in last_messages[-1].text
    assert last_messages[-2].role == "assistant" and last_messages[-2].tool_calls == []


def test_the_trace_records_every_call_with_inputs_outputs_and_time() -> None:
    backend = ScriptedToolVLM([
        reply(call("look", {"lat": 10.0, "lon": 20.0})),
        reply(call("look", {"lat": -5.0, "lon": 7.0})),
        reply(call("submit", {"lat": 10.0, "lon": 20.0})),
    ])
    final = run_loop(backend)
    steps = [e.step for e in final["events"]]
    assert steps == ["tool-loop:model", "tool:look", "tool-loop:model", "tool:look", "tool-loop:model", "tool:submit"]
    first = final["events"][1]
    assert first.inputs["arguments"] == {"lat": 10.0, "lon": 20.0}
    assert first.outputs["text"] == "looked at 10.0, 20.0"
    assert first.outputs["candidates"][0]["lat"] == 10.0
    assert first.duration_s >= 0 and first.started_at > 0
    assert final["events"][0].outputs["tool_calls"][0]["name"] == "look"
    starts = [e.started_at for e in final["events"]]
    assert starts == sorted(starts)
    # the tools' candidates are collected for the fusion, in call order
    assert [(c.lat, c.lon) for c in final["candidates"]] == [(10.0, 20.0), (-5.0, 7.0)]


# ---------------------------------------------------------------------------------------------
# In-process backends: constrained JSON actions


def test_backends_without_native_tools_get_an_action_schema_and_their_json_is_parsed() -> None:
    action = json.dumps({"tool": "submit", "arguments": {"lat": 3.0, "lon": 4.0}})
    backend = ScriptedToolVLM([VLMReply(text="{\"tool\": \"look\", \"argu", tokens=3),
                               VLMReply(text=action, finish_reason="stop", tokens=12)], native=False)
    final = run_loop(backend)
    assert final["stop_reason"] == STOP_SUBMITTED and final["answer"].lat == 3.0
    request = backend.requests[0]
    assert request.tools is None and request.json_schema is not None
    names = {option["properties"]["tool"]["const"] for option in request.json_schema["anyOf"]}
    assert names == {"look", "refuse", "crash", "submit"}
    assert "not a tool call" in (tool_events(final)[0].error or "")
    # the second request shows the failed action and its result as plain text turns
    roles = [m.role for m in backend.requests[1].messages]
    assert "tool" not in roles and roles[-2:] == ["assistant", "user"]


def test_the_action_schema_holds_each_tool_to_its_own_arguments() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    registry = ToolRegistry([LookTool(), SubmitTool()])
    schema = action_schema(tool_specs(registry))
    jsonschema.validate({"tool": "look", "arguments": {"lat": 1, "lon": 2}}, schema)
    for bad in ({"tool": "look", "arguments": {"lat": 1}}, {"tool": "fly", "arguments": {"lat": 1, "lon": 2}},
                {"tool": "look", "arguments": {"lat": 1, "lon": 2}, "extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    only_submit = action_schema(tool_specs(registry), "submit")
    assert only_submit["properties"]["tool"] == {"const": "submit"}


class PictureTool(Tool):
    name = "picture"
    description = "returns a picture"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        return ToolObservation(text="a crop", images=(Image.new("RGB", (8, 8)),))


def test_the_model_sees_the_photo_and_only_the_latest_tool_pictures() -> None:
    backend = ScriptedToolVLM([reply(call("picture", {"lat": 1.0, "lon": 2.0}))])
    run_loop(backend, tools=[PictureTool()], max_tool_calls=4)
    last = backend.requests[-1].messages
    assert [len(m.images) for m in last if m.images] == [1, 1]  # the photo (first turn) and the latest crop
    assert last[0].text == "where?" and last[0].images
    dropped = [m for m in last if "no longer shown" in m.text]
    assert len(dropped) == 2
