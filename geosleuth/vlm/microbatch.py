"""A micro-batching queue with its own worker thread, for in-process models.

Concurrent callers (many images and prompt variants in flight on one event loop, or several loops)
submit items; the worker takes the first waiting item, waits up to ``max_wait_s`` for more, and
runs up to ``max_batch`` of them in one call. Callers await a future: no thread of asyncio's
default executor (which the other stages use for decoding and search) ever blocks on the model.
The worker starts on the first submit and ends on :meth:`MicroBatcher.close`; a later submit starts
a new one (a backend may be closed at the end of one run and used again in the next).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` -> ``run_batch([... item ...])[i]``, batched across callers.

    ``run_batch`` gets a list of items and returns one result per item, in order; an exception it
    raises goes to every caller of that batch.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        name: str = "microbatch",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches_run = 0  # batches and items run so far (benchmarks report the mean batch size)
        self.items_run = 0
        self._run_batch = run_batch
        self._name = name
        self._queue: queue.Queue[object] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit_nowait(item))

    def submit_nowait(self, item: T) -> concurrent.futures.Future[R]:
        """Queue ``item``; the returned future resolves when its batch has run."""
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, args=(self._queue,), name=self._name, daemon=True)
                self._worker.start()
            self._queue.put((item, future))
        return future

    def close(self, timeout: float | None = None) -> None:
        """Finish the batches already queued, then stop the worker."""
        with self._lock:
            worker, self._worker = self._worker, None
            if worker is None:
                return
            # The old worker gets its own queue's stop marker; new submits go to a fresh queue.
            old_queue, self._queue = self._queue, queue.Queue()
            old_queue.put(_STOP)
        if worker is not threading.current_thread():
            worker.join(timeout)

    def _collect(self, jobs: queue.Queue[object]) -> tuple[list[tuple[T, concurrent.futures.Future[R]]], bool]:
        """The next batch, and whether the stop marker was seen."""
        first = jobs.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = jobs.get(timeout=remaining) if remaining > 0 else jobs.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True  # type: ignore[return-value]
            batch.append(item)
        return batch, False  # type: ignore[return-value]

    def _serve(self, jobs: queue.Queue[object]) -> None:
        stop = False
        while not stop:
            batch, stop = self._collect(jobs)
            live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batches_run += 1
            self.items_run += len(live)
            try:
                results = list(self._run_batch([item for item, _ in live]))
                if len(results) != len(live):
                    raise RuntimeError(f"{self._name}: {len(results)} results for a batch of {len(live)}")
            except BaseException as exc:  # every caller of this batch gets the error
                for _, future in live:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results, strict=True):
                future.set_result(result)
