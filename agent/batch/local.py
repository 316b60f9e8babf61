"""The local batch engine: many images in flight on one asyncio event loop, one durable line each.

The runner is generic over an async locate function ``(BatchItem) -> Prediction``: the CLI passes
``lambda item: geolocator.alocate(item.path)``, tests pass a test double.

Degraded results and the circuit breaker: unless ``allow_degraded``, a degraded result (a required
stage such as the VLM gave nothing) is held back while it is part of a run of same-kind failures.
A healthy result of an image started after them ends the run and the held lines are written (an
isolated hiccup is recorded as what it is); when the breaker opens, the held results and the images
still in flight are dropped, not written, and :class:`BatchCircuitOpen` says how to resume once the
stage is back.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

from geosleuth.errors import ConfigError, GalleryIndexError, ModelNotAvailableError
from geosleuth.types import Prediction

from .breaker import CircuitBreaker, failure_kind
from .inputs import BatchItem, check_unique
from .results import BatchResult, open_results
from .summary import BatchAborted, BatchCircuitOpen, BatchInterrupted, BatchSummary

# Errors about the environment, not about one image: recording them once per image would fill the
# results file with the same failure, so they stop the run (what is written stays; --resume later).
DEFAULT_FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, ModelNotAvailableError, GalleryIndexError,
)

LocateFn = Callable[[BatchItem], Awaitable[Prediction]]
ResultCallback = Callable[[BatchResult], None]
StartCallback = Callable[[BatchSummary], None]

T = TypeVar("T")
R = TypeVar("R")


async def map_unordered(
    fn: Callable[[T], Awaitable[R]], items: Iterable[T], concurrency: int
) -> AsyncIterator[R]:
    """``fn(item)`` for every item, at most ``concurrency`` in flight, results in completion order.

    Items are drawn lazily (a long generator is fine). An exception from ``fn`` propagates and
    cancels the calls still in flight; so does closing the iterator early (use
    ``contextlib.aclosing``): the one concurrent runner behind batches and ``Geolocator.locate_many``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    source = iter(items)
    exhausted = False
    in_flight: set[asyncio.Future[R]] = set()
    ready: list[asyncio.Future[R]] = []
    try:
        while True:
            while not exhausted and len(in_flight) < concurrency:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                in_flight.add(asyncio.ensure_future(fn(item)))
            if not in_flight:
                return
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            ready = list(done)
            while ready:
                yield ready.pop(0).result()
    finally:
        for future in ready:  # finished but not handed out: retrieve, so no "never retrieved" noise
            if not future.cancelled():
                future.exception()
        for future in in_flight:
            future.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)


async def locate_one(
    item: BatchItem, locate_fn: LocateFn, fatal: tuple[type[BaseException], ...] = DEFAULT_FATAL_ERRORS
) -> BatchResult:
    """One image through ``locate_fn``: a prediction, or the error recorded as that image's result
    (``fatal`` exceptions propagate). Every engine runs an image this way."""
    started = time.perf_counter()
    try:
        prediction = await locate_fn(item)
    except fatal:
        raise
    except Exception as exc:  # one image's failure is recorded, never fatal to the run
        message = str(exc) or repr(exc)
        return BatchResult(item, None, message, type(exc).__name__, time.perf_counter() - started)
    if not isinstance(prediction, Prediction):
        kind = type(prediction).__name__
        raise TypeError(f"locate function returned {kind} for {item.path!r}, not a Prediction")
    return BatchResult(item, prediction, None, None, time.perf_counter() - started)


class Committer:
    """Writes results (off the event loop), counts them once they are on disk, and holds degraded
    ones back while the breaker decides whether the stage is down. Every engine commits through it."""

    def __init__(
        self, write: Callable[[bytes], None], summary: BatchSummary, breaker: CircuitBreaker | None,
        on_result: ResultCallback | None, order: dict[str, int],
    ) -> None:
        self.write = write  # blocking: appends a line and fsyncs it
        self.summary = summary
        self.breaker = breaker
        self.on_result = on_result
        self.order = order  # id -> position in which the images were started
        self.held: list[BatchResult] = []

    async def commit(self, result: BatchResult) -> None:
        await asyncio.to_thread(self.write, result.to_json_line())  # fsync off the loop's thread
        self.summary.add(result)
        if self.on_result is not None:
            self.on_result(result)

    async def take(self, result: BatchResult) -> None:
        if self.breaker is None:
            await self.commit(result)
            return
        if result.prediction is None:  # a per-image error says nothing about the stages
            await self.commit(result)
            return
        kind = failure_kind(result.prediction)
        if kind is None and self.held and self.order[result.item.id] < min(self.order[h.item.id] for h in self.held):
            # Healthy, but started before every held failure (its stage answered before they failed):
            # it says nothing about whether the stage is down now.
            await self.commit(result)
            return
        if kind is not None and kind != self.breaker.streak_kind:
            await self.flush()  # a different failure: the earlier run of failures was not an outage
        self.breaker.record(kind)
        if self.breaker.tripped:
            self.summary.discarded_degraded += len(self.held) + (kind is not None)
            self.held.clear()
            if kind is None:
                await self.commit(result)
            return
        if kind is None:
            await self.flush()
            await self.commit(result)
        else:
            self.held.append(result)

    async def flush(self) -> None:
        held, self.held = self.held, []
        for result in held:
            await self.commit(result)


async def _run(
    pending: list[BatchItem], locate_fn: LocateFn, concurrency: int, fatal: tuple[type[BaseException], ...],
    committer: Committer, breaker: CircuitBreaker | None,
) -> None:
    async def locate(item: BatchItem) -> BatchResult:
        return await locate_one(item, locate_fn, fatal)

    async with aclosing(map_unordered(locate, pending, concurrency)) as results:
        async for result in results:
            await committer.take(result)
            if breaker is not None and breaker.tripped:
                return  # closing the iterator cancels the images in flight: none is written
    await committer.flush()


async def arun_batch(
    items: Iterable[BatchItem],
    locate_fn: LocateFn,
    out_path: str | os.PathLike[str],
    *,
    resume: bool = False,
    concurrency: int = 8,
    on_result: ResultCallback | None = None,
    on_start: StartCallback | None = None,
    overwrite: bool = False,
    retry_errors: bool = False,
    retry_degraded: bool = False,
    allow_degraded: bool = False,
    breaker: CircuitBreaker | None = None,
    fsync: bool = True,
    fatal_errors: tuple[type[BaseException], ...] = DEFAULT_FATAL_ERRORS,
    summary: BatchSummary | None = None,
) -> BatchSummary:
    """Locate every item not yet in ``out_path`` with up to ``concurrency`` calls in flight; see
    :func:`run_batch`. Raises :class:`BatchInterrupted` when cancelled, :class:`BatchAborted` on a
    ``fatal_errors`` exception, :class:`BatchCircuitOpen` when the breaker opens; lines written
    before any of them stay in the file."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    item_list = list(items)
    check_unique(item_list, [f"item {i}" for i in range(len(item_list))], Path("batch input"))
    out = Path(out_path)
    summary = summary if summary is not None else BatchSummary(out)
    summary.out_path, summary.total = out, len(item_list)
    if allow_degraded:
        breaker = None
    elif breaker is None:
        breaker = CircuitBreaker()
    order = {item.id: position for position, item in enumerate(item_list)}
    started = time.perf_counter()
    try:
        with open_results(
            out, item_list, summary, resume=resume, overwrite=overwrite, retry_errors=retry_errors,
            retry_degraded=retry_degraded, fsync=fsync,
        ) as (write, done):
            committer = Committer(write, summary, breaker, on_result, order)
            pending = [item for item in item_list if item.id not in done]  # started in this (input) order
            if on_start is not None:
                on_start(summary)
            started = time.perf_counter()
            await _run(pending, locate_fn, concurrency, fatal_errors, committer, breaker)
        if breaker is not None and breaker.tripped:
            raise circuit_open(breaker, summary, out)
    except asyncio.CancelledError:
        summary.interrupted = True
        raise
    except fatal_errors as exc:
        summary.aborted = f"{type(exc).__name__}: {exc}"
        raise BatchAborted(
            f"batch stopped: {exc}. {summary.done_this_run} image(s) finished this run are in {out}; "
            "fix the problem and re-run with --resume",
            summary,
        ) from exc
    finally:
        summary.elapsed_s = time.perf_counter() - started
    return summary


def circuit_open(breaker: CircuitBreaker, summary: BatchSummary, out: Path) -> BatchCircuitOpen:
    """The error that stops a run whose breaker opened (every engine raises this one)."""
    summary.circuit_open = breaker.reason
    return BatchCircuitOpen(
        f"batch stopped: a required stage is unavailable ({breaker.reason}); "
        f"{summary.done_this_run} image(s) finished this run are in {out}, images in flight were "
        "not written. Bring the stage back (e.g. start the VLM server: `geosleuth vlm serve`) and "
        "re-run with --resume; or pass --allow-degraded to keep going without it",
        summary,
    )


def run_batch(
    items: Iterable[BatchItem],
    locate_fn: LocateFn,
    out_path: str | os.PathLike[str],
    **options: Any,
) -> BatchSummary:
    """Locate ``items`` with ``locate_fn``, appending one JSON line per image to ``out_path``.

    - ``resume``: skip ids already in the file (a half-written last line is truncated first);
      without it an existing non-empty file is an error unless ``overwrite``.
    - ``retry_errors`` / ``retry_degraded`` (with ``resume``): error / degraded lines are removed and
      those images run again.
    - ``concurrency``: locate calls in flight at once (keep a VLM server's batch full).
    - ``allow_degraded``: write degraded results and keep going; otherwise a :class:`CircuitBreaker`
      (``breaker``, default 3 same-kind failures in a row) stops the run when a required stage is down.
    - ``on_start(summary)`` once the plan is known; ``on_result(result)`` after each line is on disk.
    - An exception from ``locate_fn`` is recorded as that image's error line, except ``fatal_errors``,
      which stop the run (:class:`BatchAborted`). Ctrl-C raises :class:`BatchInterrupted`.
    All carry the summary; finished lines are never lost.

    ``options`` are the keyword arguments of :func:`arun_batch` except ``summary``.
    """
    if "summary" in options:
        raise TypeError("run_batch() got an unexpected keyword argument 'summary'")
    summary = BatchSummary(Path(out_path))
    try:
        return asyncio.run(arun_batch(items, locate_fn, out_path, summary=summary, **options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        summary.interrupted = True
        raise BatchInterrupted(
            f"interrupted: {summary.done_this_run} image(s) finished this run are in {out_path}; "
            "re-run with --resume to do the rest",
            summary,
        ) from None
