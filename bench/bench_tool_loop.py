"""The tool loop's own cost: CPU time per model turn + tool call, with the model and the tools taken out.

A backend that answers instantly with one scripted call and a tool that returns at once stand in for
the VLM and the real tools (this is a measurement of the loop's machinery, not a simulation of a
run: LangGraph's two nodes per turn, the trace events, the conversation, the budget checks, the
worker thread each call runs in). Both kinds of backend are timed side by side in one process:
native tool calls (the OpenAI-compatible path) and JSON actions parsed from text (the in-process
path). What a real turn costs on top is the VLM's generation (seconds on a CPU) and the tool itself
(``bench/bench_tools.py``).

    python bench/bench_tool_loop.py [--loops 30] [--calls 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


def _loop_cpu_s(native: bool, loops: int, calls: int) -> float:
    from PIL import Image
    from pydantic import BaseModel

    from geosleuth.agent.toolloop.graph import LoopContext, build_tool_loop
    from geosleuth.agent.toolloop.prompts import tool_specs
    from geosleuth.agent.toolloop.state import Budget
    from geosleuth.agent.tools.registry import Tool, ToolContext, ToolObservation, ToolRegistry
    from geosleuth.types import RetrievalResult
    from geosleuth.vlm.backends import ChatMessage, ToolCall, VLMReply, VLMRequest

    class Args(BaseModel):
        x: float

    class Instant(Tool):
        name = "instant"
        description = "returns at once"
        arguments = Args

        def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
            return ToolObservation(text="ok", data={"x": 1})

    arguments = {"x": 0.5}

    class InstantVLM:
        model_id = "instant"
        native_tool_calls = native

        async def generate(self, request: VLMRequest) -> list[VLMReply]:
            if native:
                return [VLMReply("", "stop", 10, (ToolCall("instant", arguments, json.dumps(arguments)),))]
            return [VLMReply(json.dumps({"tool": "instant", "arguments": arguments}), "stop", 10)]

        async def aclose(self) -> None:
            pass

    registry = ToolRegistry([Instant()])
    photo = Image.new("RGB", (64, 48))
    context = ToolContext(image=photo, embeddings=None, retrieval=RetrievalResult(), resources=None)  # type: ignore[arg-type]
    graph = build_tool_loop()

    async def run_all() -> None:
        for _ in range(loops):
            ctx = LoopContext(
                backend=InstantVLM(), registry=registry, tool_context=context, specs=tool_specs(registry),
                budget=Budget(calls, 10**9, 3600.0), max_new_tokens=64, temperature=0.0,
                clock=(time.time(), time.perf_counter()),
            )
            start: dict[str, Any] = {"messages": [ChatMessage("user", "where?", [photo])],
                                     "started": time.perf_counter(), "tool_calls": 0, "tokens": 0, "turns": 0,
                                     "candidates": []}
            final = await graph.ainvoke(start, context=ctx, config={"recursion_limit": 4 * calls + 10})
            assert final["tool_calls"] == calls, final.get("stop_reason")

    asyncio.run(run_all())  # warm-up (imports, first compile paths)
    started = time.process_time()
    asyncio.run(run_all())
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=30, help="loops per measurement")
    parser.add_argument("--calls", type=int, default=8, help="tool calls per loop (agent.max_tool_calls)")
    args = parser.parse_args()
    print(f"tool loop machinery, {args.loops} loops x {args.calls} calls; instant backend and tool (measured, "
          "process CPU time, this machine)")
    for native in (True, False):
        seconds = _loop_cpu_s(native, args.loops, args.calls)
        per_turn_ms = 1000 * seconds / (args.loops * args.calls)
        kind = "native tool calls (OpenAI path)" if native else "JSON actions (in-process path)"
        print(f"  {kind:34s} {per_turn_ms:7.2f} ms CPU per turn (model turn + tool call), "
              f"{1000 * seconds / args.loops:7.1f} ms per loop")
    print("  not included: the VLM's generation and the tools' own work (bench/bench_tools.py)")


if __name__ == "__main__":
    main()
