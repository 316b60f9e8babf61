"""Progress events from the locate graph: which step runs, and the VLM's tokens while it decodes.

Nodes write :class:`~geosleuth.types.ProgressEvent` objects to LangGraph's custom stream (the
run's ``runtime.stream_writer``; a no-op unless the caller streams with ``stream_mode="custom"``).
:func:`announced` wraps a node with ``started`` / ``finished`` events; :func:`token_reporter` gives
the reason stage a callback that backends may call from their own worker threads: it hands each
count to the event loop, which writes the event. :func:`describe` is the one-line text every display
(terminal, web app) shows for an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.runtime import Runtime

from geosleuth.types import ProgressEvent

Node = Callable[[Any, Runtime[Any]], Awaitable[dict[str, Any]]]


def announced(step: str, node: Node) -> Node:
    """``node`` writing ``started`` before it runs and ``finished`` (with its error, if any) after."""

    async def run(state: Any, runtime: Runtime[Any]) -> dict[str, Any]:
        image = str(state.get("image_path", ""))
        started = time.perf_counter()
        runtime.stream_writer(ProgressEvent(image=image, step=step, state="started", elapsed_s=0.0))
        error: str | None = None
        try:
            update = await node(state, runtime)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            runtime.stream_writer(
                ProgressEvent(
                    image=image, step=step, state="finished", elapsed_s=time.perf_counter() - started, error=error
                )
            )
        return update

    run.__name__ = getattr(node, "__name__", step)
    return run


def token_reporter(state: Any, runtime: Runtime[Any], step: str = "reason") -> Callable[[int, int], None]:
    """A thread-safe ``(tokens so far, token budget)`` callback that writes ``generating`` events.

    Counts from backend threads are posted to the running event loop; a count that arrives after
    the loop has ended is dropped (the step is over by then).
    """
    loop = asyncio.get_running_loop()
    node_context = contextvars.copy_context()  # the writer needs the node's run context
    image = str(state.get("image_path", ""))
    started = time.perf_counter()
    writer = runtime.stream_writer
    lock = threading.Lock()
    last = [-1]

    def write(tokens: int, budget: int) -> None:
        writer(
            ProgressEvent(
                image=image, step=step, state="generating", elapsed_s=time.perf_counter() - started,
                tokens=tokens, token_budget=max(budget, tokens),
            )
        )

    def report(tokens: int, budget: int) -> None:
        with lock:  # one event per new count, in order
            if tokens <= last[0]:
                return
            last[0] = tokens
        with contextlib.suppress(RuntimeError):  # the loop has closed: the step is over
            loop.call_soon_threadsafe(write, tokens, budget, context=node_context)

    return report


def describe(event: ProgressEvent) -> str:
    """One line for a progress event, e.g. ``reason: 120 tokens at 14.8 tokens/s, at most 12 s left``."""
    if event.state == "started":
        return f"{event.step} ..."
    if event.state == "finished":
        outcome = f"failed ({event.error})" if event.error else "done"
        return f"{event.step} {outcome} in {event.elapsed_s:.1f} s"
    tokens = event.tokens or 0
    line = f"{event.step}: {tokens} tokens"
    if tokens and event.elapsed_s > 0:
        rate = tokens / event.elapsed_s
        line += f" at {rate:.1f} tokens/s"
        if event.token_budget is not None and event.token_budget > tokens:
            line += f", at most {(event.token_budget - tokens) / rate:.0f} s left"
    return line
