"""The reason step in ``agent.mode = tools``: one photo's tool loop, and what it hands verify.

What verify receives keeps its role: the answer ``submit`` gave becomes the VLM's hypothesis (or
abstention), and every candidate a tool proposed joins the fusion pool, where the fusion judges it
like any other. A loop that ends without a submitted answer gives no hypothesis: the VLM stage is
then missing and the photo's answer is ``degraded`` (the pipeline's status rules), with the reason
(which budget ran out, or the request error) in the failures and the trace.

A server that cannot call tools is found once (``fallback.py``); from then on the run uses the
fixed pipeline and every answer says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geosleuth.agent.answers import AnswerOrigin
from geosleuth.agent.step_events import reasoning_failures, reasoning_outputs, step_event
from geosleuth.agent.toolloop.graph import LoopContext, build_tool_loop
from geosleuth.agent.toolloop.prompts import load_loop_template, opening_messages, tool_specs
from geosleuth.agent.toolloop.state import STOP_SUBMITTED, STOP_VLM_ERROR, Budget
from geosleuth.agent.tools.registry import ToolContext, ToolRegistry
from geosleuth.agent.tools.submit import TOOL_VARIANT
from geosleuth.types import (
    Abstention,
    Candidate,
    Hypothesis,
    PromptRecord,
    ReasoningFailure,
    ReasoningResult,
    TraceEvent,
)
from geosleuth.vlm.backends import ToolsUnsupportedError
from geosleuth.vlm.tool_calling import supports_native_tools

if TYPE_CHECKING:
    from geosleuth.agent.runtime import Resources
    from geosleuth.agent.state import LocateState
    from geosleuth.prompts.render import PromptTemplate



@dataclass(frozen=True)
class ToolLoopOutcome:
    """One photo's loop: the reasoning verify reads, the tool-proposed candidates, the trace events
    (one per model turn and per tool call) and a summary for the reason step's event."""

    reasoning: ReasoningResult
    proposed: list[Candidate]
    events: list[TraceEvent]
    summary: dict[str, Any]
    template: PromptTemplate  # the loop's prompt (geo_tools), recorded with its version


async def run_tool_loop(
    state: LocateState,
    res: Resources,
    registry: ToolRegistry,
    *,
    report_tokens: Callable[[int, int], None] | None = None,
) -> ToolLoopOutcome:
    """Run the loop for the photo in ``state`` (perceive and retrieve done). Raises
    ToolsUnsupportedError when the server cannot call tools (the caller falls back)."""
    backend = res.backend
    if backend is None:
        raise ValueError("the tool loop needs a VLM backend (vlm.backend is 'none')")
    config = res.config
    budget = Budget.from_config(config.agent)
    template = load_loop_template()
    specs = tool_specs(registry)
    messages = opening_messages(
        template, state["image"], specs, budget, hint=state.get("hint"),
        action_format=not supports_native_tools(backend),
    )
    tool_context = ToolContext(
        image=state["image"],
        image_path=state["image_path"],  # zoom and read_text crop the full-resolution original
        embeddings=state["embeddings"],
        retrieval=state["retrieval"],
        resources=res,
        text=state.get("text"),
        constraints=tuple(state.get("constraints", [])),
        exclude_ids=tuple(state.get("exclude_ids", [])),
        exclude_authors=tuple(state.get("exclude_authors", [])),
        origin=AnswerOrigin(template_id=template.id, template_hash=template.sha256, variant=TOOL_VARIANT,
                            model=backend.model_id),
    )
    ctx = LoopContext(
        backend=backend, registry=registry, tool_context=tool_context, specs=specs, budget=budget,
        max_new_tokens=config.vlm.max_new_tokens, temperature=config.vlm.temperature,
        clock=state["clock"], report_tokens=report_tokens,
    )
    started = time.perf_counter()
    final = await build_tool_loop().ainvoke(
        {"messages": messages, "started": started, "tool_calls": 0, "tokens": 0, "turns": 0, "candidates": []},
        context=ctx,
        # each turn is a model node and a tools node; a turn always counts one call against the budget
        config={"recursion_limit": 2 * budget.max_tool_calls + 10},
    )
    return _outcome(final, template, backend.model_id, messages[0].text, time.perf_counter() - started)


def _outcome(
    final: dict[str, Any], template: PromptTemplate, model: str, prompt: str, seconds: float
) -> ToolLoopOutcome:
    answer = final.get("answer")
    stop = final.get("stop_reason") or "ended"
    raw = list(final.get("raw_replies", []))
    hypotheses = [answer] if isinstance(answer, Hypothesis) else []
    abstentions = [answer] if isinstance(answer, Abstention) else []
    failures = []
    if answer is None:
        why = f"the tool loop ended without a submitted answer ({stop}"
        why += f": {final['error']})" if final.get("error") else ")"
        failures.append(ReasoningFailure(
            variant=TOOL_VARIANT, template_id=template.id, template_hash=template.sha256, model=model, error=why,
            raw_text=raw[-1] if raw else None, kind="request" if stop == STOP_VLM_ERROR else "invalid",
        ))
    reasoning = ReasoningResult(
        hypotheses=hypotheses, abstentions=abstentions, failures=failures, raw_replies=raw,
        prompts=[PromptRecord(template_id=template.id, template_hash=template.sha256, variant=TOOL_VARIANT,
                              model=model, rendered=prompt)],
    )
    summary = {
        "stop_reason": stop,
        "submitted": stop == STOP_SUBMITTED,
        "tool_calls": final.get("tool_calls", 0),
        "tokens": final.get("tokens", 0),
        "turns": final.get("turns", 0),
        "seconds": round(seconds, 3),
        "proposed_candidates": len(final.get("candidates", [])),
    }
    return ToolLoopOutcome(
        reasoning=reasoning, proposed=list(final.get("candidates", [])), events=list(final.get("events", [])),
        summary=summary, template=template,
    )


async def tools_reason_update(
    state: LocateState, res: Resources, started: float, inputs: dict[str, Any],
    report_tokens: Callable[[int, int], None] | None = None,
) -> dict[str, Any] | None:
    """The locate graph's reason-step update in tools mode; None when the server turned out not to
    call tools (then ``res.tools_fallback`` says why and the caller runs the fixed pipeline)."""
    registry = res.tool_registry
    if registry is None:
        raise ValueError("agent.mode is 'tools' but no tools were loaded (Resources.tool_registry); this is a bug")
    try:
        outcome = await run_tool_loop(state, res, registry, report_tokens=report_tokens)
    except ToolsUnsupportedError as exc:
        res.tools_fallback = str(exc)  # found once: later photos go straight to the pipeline
        return None
    reasoning = outcome.reasoning
    outputs = {"agent_mode": "tools", "loop": outcome.summary, **reasoning_outputs(reasoning)}
    error = None if reasoning.hypotheses or reasoning.abstentions else reasoning.failures[0].error
    budget = res.config.agent
    template = outcome.template
    inputs = {**inputs, "agent_mode": "tools", "template": template.id, "template_version": template.version,
              "tools": registry.names(), "max_tool_calls": budget.max_tool_calls, "max_tokens": budget.max_tokens,
              "max_seconds": budget.max_seconds}
    reason_event = step_event(state, "reason", started, inputs, outputs, error=error)
    return {
        "reasoning": reasoning,
        "proposed": outcome.proposed,
        "failures": reasoning_failures(reasoning),
        # the step's own event first (it started first), then one per model turn and tool call
        "events": [reason_event, *outcome.events],
    }
