"""Progress while a photo is located: every step announced, the VLM's tokens counted as they come."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from geosleuth.agent.graph import STEPS, LocatePipeline
from geosleuth.types import ProgressEvent


def _tiny_vlm_resources(make_resources: Any, base_config: Any, tiny_vlm_dir: Path) -> Any:
    """Resources with the tiny in-process VLM: two prompts x one sample x at most 24 tokens."""
    from geosleuth.vlm.transformers_backend import TransformersBackend

    config = base_config.model_copy(deep=True)
    config.vlm.backend, config.vlm.model = "transformers", str(tiny_vlm_dir)
    config.vlm.samples_per_variant, config.vlm.max_new_tokens = 1, 24
    config.prompts.neighbor_counts = [0, 5]
    return make_resources(backend=TransformersBackend(config.vlm), config=config)


def _assert_live_progress(events: list[ProgressEvent], photo: Path) -> None:
    """Every step starts and finishes in pipeline order; the reason step counts its tokens as they come."""
    assert all(isinstance(e, ProgressEvent) and e.image == str(photo) for e in events)
    assert [(e.step, e.state) for e in events if e.state != "generating"] == [
        (step, state) for step in STEPS for state in ("started", "finished")
    ]
    generating = [e for e in events if e.state == "generating"]
    assert generating and all(e.step == "reason" for e in generating)
    counts = [e.tokens for e in generating]
    assert counts == sorted(counts) and counts[-1] > 0
    # Two prompts x one sample x 24 tokens: the budget is the most the answers may take.
    assert all(e.token_budget == 2 * 24 for e in generating)
    assert counts[-1] <= 2 * 24


def test_stream_with_progress_reports_steps_and_vlm_tokens(
    make_resources: Any, base_config: Any, tiny_vlm_dir: Path, photo: Path
) -> None:
    resources = _tiny_vlm_resources(make_resources, base_config, tiny_vlm_dir)
    backend = resources.backend
    pipeline = LocatePipeline(resources)

    async def collect() -> list[tuple[str, dict[str, Any]]]:
        try:
            return [item async for item in pipeline.stream(str(photo), progress=True)]
        finally:
            await backend.aclose()

    items = asyncio.run(collect())
    _assert_live_progress([update["progress"] for step, update in items if step == "progress"], photo)
    # The finished steps still arrive as before.
    assert [step for step, _ in items if step != "progress"] == [*STEPS, "done"]


def test_chat_turns_report_live_progress_and_finished_steps(
    make_resources: Any, base_config: Any, tiny_vlm_dir: Path, photo: Path, tmp_path: Path
) -> None:
    from geosleuth.agent.chat import ChatEngine

    resources = _tiny_vlm_resources(make_resources, base_config, tiny_vlm_dir)
    live: list[ProgressEvent] = []
    finished: list[str] = []

    async def on_progress(event: ProgressEvent) -> None:
        live.append(event)

    async def on_step(step: str, event: Any) -> None:
        finished.append(step)

    async def chat() -> tuple[int, int]:
        try:
            async with ChatEngine(resources, tmp_path / "s.sqlite") as engine:
                first = await engine.start(photo, on_step=on_step, on_progress=on_progress)
                opening = len(live)
                await engine.send(first.session_id, "it is in Europe", on_step=on_step, on_progress=on_progress)
                return opening, len(live)
        finally:
            await resources.backend.aclose()

    opening, total = asyncio.run(chat())
    _assert_live_progress(live[:opening], photo)  # the opening answer
    _assert_live_progress(live[opening:total], photo)  # a hint re-locates: live again
    assert finished == [*STEPS, *STEPS]


def test_stream_without_progress_is_unchanged(make_resources: Any, photo: Path) -> None:
    pipeline = LocatePipeline(make_resources())

    async def collect() -> list[str]:
        return [step async for step, _ in pipeline.stream(str(photo))]

    assert asyncio.run(collect()) == [*STEPS, "done"]
