"""The reason ⇄ tools cycle as a LangGraph StateGraph: a model turn, then its tool calls, again.

Every model turn asks for exactly one tool call (``tool_choice = "required"``; the last call the
budget allows must be ``submit``), natively (OpenAI tools API) or as a constrained JSON action
(in-process backends, :mod:`geosleuth.vlm.tool_calling`). Each turn and each call is one
TraceEvent (``tool-loop:model``, ``tool:<name>``) with its inputs, outputs and time.

A call that fails (a ToolError, arguments that are not JSON, an unknown tool, a reply with no call,
even a tool that crashes) becomes the observation the model reads next, never an exception. The
loop ends when ``submit`` gives an answer, when a budget is spent (tool calls, generated tokens,
wall time), or when a VLM request fails; ``stop_reason`` says which.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from geosleuth.agent.step_events import timed_event
from geosleuth.agent.toolloop.prompts import SUBMIT_TOOL
from geosleuth.agent.toolloop.state import (
    STOP_SECONDS,
    STOP_SUBMITTED,
    STOP_TOKENS,
    STOP_TOOL_CALLS,
    STOP_VLM_ERROR,
    Budget,
    ToolLoopState,
)
from geosleuth.agent.tools.registry import ToolContext, ToolError, ToolObservation, ToolRegistry
from geosleuth.types import TraceEvent
from geosleuth.vlm.backends import (
    ChatMessage,
    ToolCall,
    ToolSpec,
    ToolsUnsupportedError,
    VLMBackend,
    VLMRequest,
    VLMRequestError,
)
from geosleuth.vlm.tool_calling import generate_tool_calls

# An observation the model reads is cut to this many characters (tools keep theirs short; this bounds a bug).
MAX_OBSERVATION_CHARS = 2000


@dataclass(frozen=True)
class LoopContext:
    """What one photo's loop runs with (the subgraph's LangGraph context)."""

    backend: VLMBackend
    registry: ToolRegistry
    tool_context: ToolContext
    specs: list[ToolSpec]
    budget: Budget
    max_new_tokens: int  # per turn (vlm.max_new_tokens), further bounded by the tokens left
    temperature: float
    clock: tuple[float, float]  # (unix time, perf_counter) of the run's start: event times
    report_tokens: Callable[[int, int], None] | None = None  # (tokens so far, budget): progress
    # "required" (any tool, every turn) or a tool's name; "auto" would let a turn end without a call.
    tool_choice: str = "required"


def _event(ctx: LoopContext, step: str, started: float, inputs: dict[str, Any], outputs: dict[str, Any],
           error: str | None = None) -> TraceEvent:
    return timed_event(ctx.clock, step, started, inputs, outputs, error)


def spent_budget(state: ToolLoopState, budget: Budget, *, tokens: bool = True) -> str | None:
    """The budget that is spent, if any (tool calls, then tokens, then wall time). ``tokens=False``
    before running a call: its tokens are already generated, running it costs none."""
    if state.get("tool_calls", 0) >= budget.max_tool_calls:
        return STOP_TOOL_CALLS
    if tokens and state.get("tokens", 0) >= budget.max_tokens:
        return STOP_TOKENS
    if time.perf_counter() - state["started"] >= budget.max_seconds:
        return STOP_SECONDS
    return None


def _seconds_left(state: ToolLoopState, budget: Budget) -> float:
    return max(0.0, budget.max_seconds - (time.perf_counter() - state["started"]))


def _tool_choice(state: ToolLoopState, ctx: LoopContext) -> str:
    """``ctx.tool_choice`` ("required": every turn is a call), or ``submit`` when only one call is left."""
    if ctx.budget.max_tool_calls - state.get("tool_calls", 0) <= 1 and SUBMIT_TOOL in ctx.registry.names():
        return SUBMIT_TOOL
    return ctx.tool_choice


async def model_turn(state: ToolLoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    ctx = runtime.context
    stop = spent_budget(state, ctx.budget)
    if stop is not None:
        return {"stop_reason": stop, "pending": []}
    started = time.perf_counter()
    used = state.get("tokens", 0)
    max_tokens = min(ctx.max_new_tokens, ctx.budget.max_tokens - used)
    choice = _tool_choice(state, ctx)
    report = ctx.report_tokens
    request = VLMRequest(
        messages=state["messages"], n=1, temperature=ctx.temperature, max_tokens=max_tokens,
        tools=ctx.specs, tool_choice=choice,
        on_tokens=None if report is None else (lambda n: report(used + n, ctx.budget.max_tokens)),
    )
    turn = state.get("turns", 0) + 1
    inputs = {"turn": turn, "max_tokens": max_tokens, "tool_choice": choice}
    try:
        replies = await asyncio.wait_for(generate_tool_calls(ctx.backend, request), _seconds_left(state, ctx.budget))
    except asyncio.TimeoutError:  # (not the builtin TimeoutError before Python 3.11)
        error = f"the model turn did not finish within the wall-time budget ({ctx.budget.max_seconds:g} s)"
        return {"stop_reason": STOP_SECONDS, "pending": [], "turns": turn,
                "events": [_event(ctx, "tool-loop:model", started, inputs, {}, error=error)]}
    except ToolsUnsupportedError:
        raise  # the run falls back to the fixed pipeline (agent.toolloop.node)
    except VLMRequestError as exc:
        error = f"{type(exc).__name__}: {exc}"
        return {"stop_reason": STOP_VLM_ERROR, "error": error, "pending": [], "turns": turn,
                "events": [_event(ctx, "tool-loop:model", started, inputs, {}, error=error)]}
    if not replies:
        error = "the backend returned no reply"
        return {"stop_reason": STOP_VLM_ERROR, "error": error, "pending": [], "turns": turn,
                "events": [_event(ctx, "tool-loop:model", started, inputs, {}, error=error)]}
    reply = replies[0]
    # A backend that does not count tokens is charged the turn's whole limit (an upper bound).
    tokens = reply.tokens if reply.tokens is not None else max_tokens
    calls = [
        call if call.id else ToolCall(call.name, call.arguments, call.raw, id=f"call-{turn}-{i}")
        for i, call in enumerate(reply.tool_calls)
    ]
    outputs = {
        "text": reply.text,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments, "raw": c.raw} for c in calls],
        "finish_reason": reply.finish_reason,
        "tokens": tokens,
        "tokens_counted": "reported by the backend" if reply.tokens is not None else "upper bound (max_tokens)",
    }
    # A reply that calls nothing is a failed call: the tools node tells the model so.
    pending = calls or [ToolCall(name="", arguments=None, raw=reply.text, id=f"call-{turn}-0")]
    # Nameless "calls" (no call, or an action that did not parse) stay out of the turn's tool calls: a
    # server would refuse them; the model's text shows what it sent.
    assistant = ChatMessage("assistant", reply.text, tool_calls=[c for c in pending if c.name])
    return {
        "messages": [*state["messages"], assistant],
        "pending": pending,
        "tokens": used + tokens,
        "turns": turn,
        "raw_replies": [reply.text or json.dumps(outputs["tool_calls"])],
        "events": [_event(ctx, "tool-loop:model", started, inputs, outputs)],
    }


def _bad_call_message(call: ToolCall, registry: ToolRegistry) -> str:
    if not call.name:
        return (f"your reply was not a tool call ({call.raw[:200]!r}); call one of the tools "
                f"({', '.join(registry.names())}); {SUBMIT_TOOL} gives your answer")
    return f"{call.name}: the arguments are not a JSON object ({call.raw[:200]!r}); send them as one"


async def run_tools(state: ToolLoopState, runtime: Runtime[LoopContext]) -> dict[str, Any]:
    ctx = runtime.context
    messages = list(state["messages"])
    calls_made = state.get("tool_calls", 0)
    candidates = list(state.get("candidates", []))
    events: list[TraceEvent] = []
    update: dict[str, Any] = {}
    for call in state.get("pending", []):
        stop = spent_budget({**state, "tool_calls": calls_made}, ctx.budget, tokens=False)
        if stop is not None:
            update["stop_reason"] = stop
            break
        started = time.perf_counter()
        inputs = {"id": call.id, "arguments": call.arguments if call.arguments is not None else call.raw}
        observation: ToolObservation | None = None
        error: str | None = None
        try:
            if call.arguments is None:
                raise ToolError(_bad_call_message(call, ctx.registry))
            # The tools see what earlier calls proposed (score_location judges with them, submit
            # treats them as shown to the model: an answer repeating one is an echo).
            context = replace(ctx.tool_context, candidates=tuple(candidates))
            observation = await asyncio.wait_for(
                asyncio.to_thread(ctx.registry.call, call.name, call.arguments, context),
                _seconds_left({**state}, ctx.budget),
            )
        except ToolError as exc:
            error = str(exc)
        except asyncio.TimeoutError:
            error = f"{call.name} did not finish within the wall-time budget"
            update["stop_reason"] = STOP_SECONDS
        except Exception as exc:  # a tool's bug is the model's observation too, never a crash of the run
            error = f"{call.name} failed unexpectedly ({type(exc).__name__}: {exc})"
        calls_made += 1
        step = f"tool:{call.name or 'invalid'}"
        if observation is None:
            events.append(_event(ctx, step, started, inputs, {}, error=error))
            messages.append(_result_message(call, f"error: {error}"))
            if "stop_reason" in update:
                break
            continue
        events.append(_event(ctx, step, started, inputs, {
            "text": observation.text,
            "data": observation.data,
            "candidates": [c.model_dump(mode="json") for c in observation.candidates],
            "images": len(observation.images),
            "answer": observation.answer.model_dump(mode="json") if observation.answer is not None else None,
        }))
        messages.append(_result_message(call, observation.text[:MAX_OBSERVATION_CHARS]))
        if observation.images:  # tool messages carry text only: pictures follow as the user's turn
            messages = _without_tool_pictures(messages)
            messages.append(ChatMessage("user", f"The pictures from {call.name}:", list(observation.images)))
        candidates += observation.candidates
        if observation.answer is not None:
            update.update(answer=observation.answer, stop_reason=STOP_SUBMITTED)
            break
    return {**update, "messages": messages, "pending": [], "tool_calls": calls_made, "candidates": candidates,
            "events": events}


def _result_message(call: ToolCall, text: str) -> ChatMessage:
    """A call's result as the model reads it: the answer to that call, or (nameless) the user's word."""
    return ChatMessage("tool", text, tool_call_id=call.id) if call.name else ChatMessage("user", text)


def _without_tool_pictures(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The conversation with earlier tools' pictures replaced by a note: the model sees the photo and
    the latest tool pictures only (servers cap images per prompt: `vlm serve` allows 2 with tools)."""
    out = messages[:1]
    for message in messages[1:]:
        if message.images and message.role == "user":
            message = ChatMessage("user", f"{message.text} (no longer shown: only the latest pictures are kept)")
        out.append(message)
    return out


def _after_model(state: ToolLoopState) -> str:
    return END if state.get("stop_reason") else "tools"


def _after_tools(state: ToolLoopState) -> str:
    return END if state.get("stop_reason") else "model"


def build_tool_loop() -> Any:
    """The compiled loop (run it with ``context=LoopContext``)."""
    graph = StateGraph(ToolLoopState, context_schema=LoopContext)
    graph.add_node("model", model_turn)
    graph.add_node("tools", run_tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", _after_model, ["tools", END])
    graph.add_conditional_edges("tools", _after_tools, ["model", END])
    return graph.compile(checkpointer=False, name="geosleuth-tool-loop")
