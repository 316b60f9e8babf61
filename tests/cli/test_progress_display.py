"""The terminal's progress lines say what runs, how fast the VLM decodes and how long it may take."""

from __future__ import annotations

import io

from rich.console import Console

from geosleuth.agent.progress import describe
from geosleuth.cli.progress import LocateProgress
from geosleuth.types import ProgressEvent, TraceEvent


def _event(**fields) -> ProgressEvent:
    return ProgressEvent(image="p.jpg", step="reason", **fields)


def test_generating_shows_tokens_speed_and_an_upper_bound_on_time_left() -> None:
    line = describe(_event(state="generating", elapsed_s=4.0, tokens=60, token_budget=660))
    # 60 tokens in 4 s = 15 tokens/s; 600 tokens still allowed -> at most 40 s.
    assert line == "reason: 60 tokens at 15.0 tokens/s, at most 40 s left"
    assert describe(_event(state="generating", elapsed_s=0.5, tokens=0, token_budget=660)) == "reason: 0 tokens"


def test_started_and_finished_lines() -> None:
    assert describe(_event(state="started", elapsed_s=0.0)) == "reason ..."
    assert describe(_event(state="finished", elapsed_s=2.5)) == "reason done in 2.5 s"
    assert "failed (VLMError: boom)" in describe(_event(state="finished", elapsed_s=1.0, error="VLMError: boom"))


def test_finished_steps_are_printed_one_per_line() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with LocateProgress(console, "locating p.jpg") as progress:
        progress.feed("progress", {"progress": _event(state="generating", elapsed_s=1.0, tokens=5, token_budget=50)})
        progress.feed("perceive", {"event": TraceEvent(step="perceive", started_at=0.0, duration_s=0.25)})
        progress.feed("reason", {"event": TraceEvent(step="reason", started_at=1.0, duration_s=3.0, error="x")})
    lines = buffer.getvalue().splitlines()
    assert "perceive 0.25 s" in lines[0]
    assert "reason 3.00 s" in lines[1] and "failed, continuing" in lines[1]


def test_chat_turns_feed_finished_steps_through_on_step() -> None:
    import asyncio

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with LocateProgress(console, "locating p.jpg") as progress:
        asyncio.run(progress.on_step("retrieve", TraceEvent(step="retrieve", started_at=0.0, duration_s=0.5)))
    assert "retrieve 0.50 s" in buffer.getvalue()


def test_chat_turns_show_the_step_in_progress_through_on_progress() -> None:
    import asyncio

    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    with LocateProgress(console, "thinking") as progress:
        asyncio.run(progress.on_progress(_event(state="started", elapsed_s=0.0)))
        assert progress.line == "thinking: reason ..."
        asyncio.run(progress.on_progress(_event(state="generating", elapsed_s=4.0, tokens=60, token_budget=660)))
        assert progress.line == "thinking: reason: 60 tokens at 15.0 tokens/s, at most 40 s left"
        asyncio.run(progress.on_step("reason", TraceEvent(step="reason", started_at=0.0, duration_s=5.0)))
        assert progress.line == "thinking: reason done, verify ..."
