"""agent.mode = tools in the locate graph: the submitted answer is the VLM's hypothesis, tool-proposed
candidates join the fusion pool, a loop without an answer is degraded (never a VLM answer), and a
server that cannot call tools makes the run fall back to the fixed pipeline, once, saying so."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from geosleuth.agent.graph import LocatePipeline
from geosleuth.agent.tools.registry import Tool, ToolContext, ToolObservation, ToolRegistry
from geosleuth.config import apply_overrides
from geosleuth.types import Candidate, CandidateSource, Hypothesis, PredictionStatus
from geosleuth.vlm.backends import ToolCall, ToolsUnsupportedError, VLMReply, VLMRequest

LISBON = (38.7223, -9.1393)
TOKYO = (35.6762, 139.6503)


class PointArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float
    lon: float


class ProposeTool(Tool):
    name = "propose"
    description = "propose a point"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, PointArgs)
        return ToolObservation(text="ok", candidates=(
            Candidate(lat=args.lat, lon=args.lon, source=CandidateSource.GPS_GALLERY, source_ref="proposed"),))


class SubmitTool(Tool):
    name = "submit"
    description = "final answer"
    arguments = PointArgs

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, PointArgs)
        origin = context.origin
        return ToolObservation(text="submitted", answer=Hypothesis(
            lat=args.lat, lon=args.lon, confidence=0.6, raw_text="{}", template_id=origin.template_id,
            template_hash=origin.template_hash, model=origin.model, variant=origin.variant))


def _call(name: str, lat: float, lon: float) -> VLMReply:
    args = {"lat": lat, "lon": lon}
    return VLMReply(text="", finish_reason="stop", tokens=8,
                    tool_calls=(ToolCall(name=name, arguments=args, raw=json.dumps(args)),))


class ToolVLM:
    """Tool requests get the scripted calls in turn (the last repeats); ``refuse_tools`` makes them
    raise ToolsUnsupportedError (a vLLM server without tool flags); answer requests get ``answer``."""

    native_tool_calls = True

    def __init__(self, script: list[VLMReply], *, answer: dict[str, Any] | None = None,
                 refuse_tools: bool = False) -> None:
        self.script = script
        self.answer = answer
        self.refuse_tools = refuse_tools
        self.model_id = "scripted-tools"
        self.requests: list[VLMRequest] = []

    async def generate(self, request: VLMRequest) -> list[VLMReply]:
        self.requests.append(request)
        if request.tools:
            if self.refuse_tools:
                raise ToolsUnsupportedError('HTTP 400: "auto" tool choice requires --tool-call-parser', 400)
            turn = sum(1 for r in self.requests if r.tools)
            return [self.script[min(turn, len(self.script)) - 1]]
        return [VLMReply(json.dumps(self.answer), "stop")] * request.n

    async def aclose(self) -> None:
        pass


def _pipeline(make_resources: Any, base_config: Any, backend: Any, *, max_tool_calls: int = 4) -> LocatePipeline:
    config = apply_overrides(base_config, ["agent.mode=tools", f"agent.max_tool_calls={max_tool_calls}"])
    resources = make_resources(backend=backend, config=config)
    resources.tool_registry = ToolRegistry([ProposeTool(), SubmitTool()])
    return LocatePipeline(resources)


def test_the_submitted_answer_is_the_vlm_hypothesis_and_tool_candidates_are_judged(
    make_resources, base_config, photo
) -> None:
    backend = ToolVLM([_call("propose", *TOKYO), _call("submit", *LISBON)])
    outcome = asyncio.run(_pipeline(make_resources, base_config, backend).run(str(photo)))
    prediction = outcome.prediction
    assert prediction.status == PredictionStatus.OK and prediction.missing_stages == []
    assert outcome.reasoning is not None
    [hypothesis] = outcome.reasoning.hypotheses
    assert (hypothesis.lat, hypothesis.lon) == LISBON and hypothesis.template_id == "geo_tools"
    # the proposed point is a candidate of the fusion pool, scored like the others
    assert any(c.source_ref == "proposed" and (c.lat, c.lon) == TOKYO for c in outcome.summary.candidates)
    steps = [e.step for e in outcome.trace.events]
    assert steps == ["perceive", "retrieve", "reason", "tool-loop:model", "tool:propose", "tool-loop:model",
                     "tool:submit", "verify", "decide"]
    reason = outcome.trace.events[2]
    assert reason.inputs["agent_mode"] == "tools" and reason.inputs["max_tool_calls"] == 4
    assert reason.outputs["loop"]["stop_reason"] == "submitted"
    assert outcome.trace.prompts[0].template_id == "geo_tools"


def test_a_loop_without_a_submitted_answer_is_degraded_and_says_which_budget(
    make_resources, base_config, photo
) -> None:
    backend = ToolVLM([_call("propose", *TOKYO)])  # never submits
    outcome = asyncio.run(_pipeline(make_resources, base_config, backend, max_tool_calls=2).run(str(photo)))
    prediction = outcome.prediction
    assert prediction.status == PredictionStatus.DEGRADED and prediction.missing_stages == ["vlm"]
    assert outcome.reasoning is not None and outcome.reasoning.hypotheses == []
    assert any("budget: tool calls" in f.error for f in prediction.failures), prediction.failures
    assert "budget: tool calls" in (outcome.trace.events[2].error or "")


def test_a_server_without_tool_calls_falls_back_to_the_pipeline_once_and_says_so(
    make_resources, base_config, photo, doubles
) -> None:
    answer = doubles.answer(*LISBON, country="Portugal", continent="Europe")
    backend = ToolVLM([], answer=answer, refuse_tools=True)
    pipeline = _pipeline(make_resources, base_config, backend)
    first = asyncio.run(pipeline.run(str(photo)))
    second = asyncio.run(pipeline.run(str(photo)))
    assert sum(1 for r in backend.requests if r.tools) == 1  # found once, not per photo
    assert pipeline.resources.tools_fallback is not None
    for outcome in (first, second):
        assert outcome.prediction.status == PredictionStatus.OK  # the pipeline's VLM answers count
        assert outcome.reasoning is not None and outcome.reasoning.hypotheses
        assert any("fell back to the fixed pipeline" in f.error for f in outcome.prediction.failures)
        reason = next(e for e in outcome.trace.events if e.step == "reason")
        assert reason.inputs["agent_mode"].startswith("pipeline (fallback from tools")


def test_the_preflight_finds_a_server_without_tool_calls_before_any_photo(make_resources, base_config, photo) -> None:
    from geosleuth.api import Geolocator

    backend = ToolVLM([], answer={}, refuse_tools=True)
    pipeline = _pipeline(make_resources, base_config, backend)
    geo = Geolocator(pipeline.resources.config, resources=pipeline.resources)
    assert geo.tools_fallback is None
    geo.check_ready()
    assert "--tool-call-parser" in (geo.tools_fallback or "")
    assert [bool(r.tools) for r in backend.requests] == [True]  # one probe, no photo yet
    geo.close()


def test_tools_mode_with_a_tool_calling_backend_needs_no_fallback(make_resources, base_config) -> None:
    from geosleuth.api import Geolocator

    pipeline = _pipeline(make_resources, base_config, ToolVLM([_call("submit", *LISBON)]))
    geo = Geolocator(pipeline.resources.config, resources=pipeline.resources)
    geo.check_ready()
    assert geo.tools_fallback is None
    geo.close()


def test_the_trace_views_list_each_tool_call_with_its_arguments_and_result(make_resources, base_config, photo) -> None:
    from rich.console import Console

    from geosleuth.agent.trace import trace_html, trace_tree

    backend = ToolVLM([_call("propose", *TOKYO), _call("nosuch", 1.0, 2.0), _call("submit", *LISBON)])
    outcome = asyncio.run(_pipeline(make_resources, base_config, backend).run(str(photo)))
    page = trace_html(outcome.trace)
    assert "Tool calls (3)" in page
    assert page.index("propose") < page.index("nosuch") < page.index("submitted")  # in call order
    assert "35.6762" in page and "error: there is no tool &#x27;nosuch&#x27;" in page
    console = Console(width=200, record=True, color_system=None)
    console.print(trace_tree(outcome.trace))
    text = console.export_text()
    assert "tool calls (3)" in text and "error: there is no tool 'nosuch'" in text and "submitted" in text
