"""Progress while a photo is located: every step announced, the VLM's tokens counted as they come."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from geosleuth.agent.graph import STEPS, LocatePipeline
from geosleuth.types import ProgressEvent


def test_stream_with_progress_reports_steps_and_vlm_tokens(
    make_resources: Any, base_config: Any, tiny_vlm_dir: Path, photo: Path
) -> None:
    from geosleuth.vlm.transformers_backend import TransformersBackend

    config = base_config.model_copy(deep=True)
    config.vlm.backend, config.vlm.model = "transformers", str(tiny_vlm_dir)
    config.vlm.samples_per_variant, config.vlm.max_new_tokens = 1, 24
    config.prompts.neighbor_counts = [0, 5]
    backend = TransformersBackend(config.vlm)
    pipeline = LocatePipeline(make_resources(backend=backend, config=config))

    async def collect() -> list[tuple[str, dict[str, Any]]]:
        try:
            return [item async for item in pipeline.stream(str(photo), progress=True)]
        finally:
            await backend.aclose()

    items = asyncio.run(collect())
    events = [update["progress"] for step, update in items if step == "progress"]
    assert all(isinstance(e, ProgressEvent) and e.image == str(photo) for e in events)
    # Every step starts and finishes, in pipeline order, and the finished steps still arrive as before.
    assert [(e.step, e.state) for e in events if e.state != "generating"] == [
        (step, state) for step in STEPS for state in ("started", "finished")
    ]
    assert [step for step, _ in items if step != "progress"] == [*STEPS, "done"]
    generating = [e for e in events if e.state == "generating"]
    assert generating and all(e.step == "reason" for e in generating)
    counts = [e.tokens for e in generating]
    assert counts == sorted(counts) and counts[-1] > 0
    # Two prompts x one sample x 24 tokens: the budget is the most the answers may take.
    assert all(e.token_budget == 2 * 24 for e in generating)
    assert counts[-1] <= 2 * 24


def test_stream_without_progress_is_unchanged(make_resources: Any, photo: Path) -> None:
    pipeline = LocatePipeline(make_resources())

    async def collect() -> list[str]:
        return [step async for step, _ in pipeline.stream(str(photo))]

    assert asyncio.run(collect()) == [*STEPS, "done"]
