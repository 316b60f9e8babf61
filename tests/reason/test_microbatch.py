"""The micro-batching queue: concurrent callers share batches, errors reach every caller of a batch,
the event loop never waits on the model, and a closed queue starts again on the next request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from geosleuth.vlm.microbatch import MicroBatcher


def test_concurrent_items_run_in_few_batches_on_the_worker_thread() -> None:
    seen: list[tuple[list[int], str]] = []

    def run(items: list[int]) -> list[int]:
        seen.append((list(items), threading.current_thread().name))
        time.sleep(0.05)
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, max_wait_s=0.05, name="test-batcher")

    async def many() -> list[int]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(8)))

    assert asyncio.run(many()) == [i * 10 for i in range(8)]
    assert all(len(items) <= 4 for items, _ in seen) and len(seen) <= 3
    assert {name for _, name in seen} == {"test-batcher"}
    assert (batcher.batches_run, batcher.items_run) == (len(seen), 8)
    batcher.close()
    assert asyncio.run(batcher.submit(5)) == 50  # a new worker after close
    batcher.close()


def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def run(items: list[int]) -> list[int]:
        raise RuntimeError("model crashed")

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8, max_wait_s=0.02)

    async def two() -> list[object]:
        return await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)

    results = asyncio.run(two())
    assert all(isinstance(r, RuntimeError) and "model crashed" in str(r) for r in results)
    batcher.close()


def test_the_event_loop_keeps_running_while_a_batch_runs() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: time.sleep(0.3) or items, max_batch=1, max_wait_s=0)

    async def main() -> int:
        ticks = 0
        job = asyncio.ensure_future(batcher.submit(1))
        while not job.done():
            await asyncio.sleep(0.01)
            ticks += 1
        return ticks

    assert asyncio.run(main()) >= 10
    batcher.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda items: items, max_batch=0, max_wait_s=0)
