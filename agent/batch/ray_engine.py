"""Ray engine for ``geosleuth batch --engine ray``: the local batch's guarantees, on a Ray cluster.

Pipeline (Ray core: a pool of actors fed by the driver)::

    inputs (driver: read_batch_input, minus ids already in --out)
      -> shards of ``shard_size`` images
      -> LocateActor pool: each actor loads the models once (a Geolocator: image and location
         encoders, GPS gallery, gallery store, VLM backend; one GPU per actor when the cluster has
         GPUs) and runs perceive -> retrieve -> reason -> verify -> decide on its shard, with up to
         ``concurrency`` images in flight (requests to one or many OpenAI-compatible vLLM servers)
      -> driver: commits each finished shard's results, as soon as it arrives, through the local
         engine's Committer (degraded results held back, the circuit breaker)

Why Ray core and not a Ray Data ``map_batches``: the input is a list of file paths and the output a
few hundred bytes per photo, so Ray Data's planning, its helper actors (stats, autoscaling, actor
location: about 3 CPU-s per run here) and its output buffering (a finished shard reached the driver
only when the whole operator finished) bought nothing; the driver keeps every actor two shards deep
instead, which is the same back-pressure. docs/ray.md has the measurements.

The results file is the local engine's (``agent/batch/``: same lines, same resume rules, the same
lock), mirrored as Parquet shards (``agent/batch/parquet.py``: ``results.parquet/``), written only by
the driver: each line goes out in one write followed by fsync, and a line is done once it is
complete on disk. A SIGKILL of the driver leaves at most a half-written last line, which
``--resume`` removes; a killed worker's shard was never written: Ray restarts the actor and runs the
shard again (``ACTOR_RESTARTS``). So a photo is never recorded twice and at most the photos in flight
are lost. Image paths must be readable on every node (a shared file system); traces come back to the
driver and are written there.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geosleuth.agent.batch import (
    DEFAULT_FATAL_ERRORS,
    BatchAborted,
    BatchItem,
    BatchResult,
    BatchSummary,
    CircuitBreaker,
    ResultCallback,
    StartCallback,
    check_unique,
    locate_one,
    open_results,
)
from geosleuth.agent.batch.local import Committer, circuit_open
from geosleuth.agent.batch.parquet import ParquetMirror
from geosleuth.config import Config
from geosleuth.errors import GeosleuthError, StageUnavailableError
from geosleuth.types import Prediction

DEFAULT_SHARD_SIZE = 16
# A killed or crashed actor is restarted (its models load again) and its queued shards re-run, this
# many times per actor; after that the run stops with Ray's error (committed lines stay, --resume).
ACTOR_RESTARTS = 3
# Shards queued per actor: one running, one waiting, so an actor never idles between shards.
SHARDS_PER_ACTOR = 2
# Shards per actor at least (smaller shards for small runs), so the last ones finish close together.
TAIL_SHARDS = 4
TraceCallback = Callable[[BatchItem, str], None]


@dataclass(frozen=True)
class RayBatchOptions:
    """How the Ray engine runs: ``address`` of a running cluster (None: a local Ray instance),
    ``actors`` in the pool (None: one per GPU, else one per ``cpus_per_actor`` CPUs), at most
    ``shard_size`` images per shard (fewer in small runs: at least ``TAIL_SHARDS`` shards per actor),
    images in flight per actor (``concurrency``)."""

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    shard_size: int = DEFAULT_SHARD_SIZE
    concurrency: int = 8
    local_cpus: int | None = None  # CPUs of the local instance started when there is no address

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.concurrency < 1 or (self.actors is not None and self.actors < 1):
            raise ValueError(
                f"shard_size, concurrency and actors must be >= 1 (got {self.shard_size}, {self.concurrency}, "
                f"{self.actors})"
            )


class LocateActor:
    """One Ray actor: a Geolocator whose models load once, in the constructor; called on a shard of
    images (``id`` and ``path`` lists), returns one results line per image."""

    def __init__(
        self, config: dict[str, Any], top_k: int | None, with_trace: bool, concurrency: int,
        fatal_errors: tuple[type[BaseException], ...],
    ) -> None:
        from geosleuth.api import Geolocator

        self._geo = Geolocator(Config.model_validate(config))
        self._top_k = top_k
        self._with_trace = with_trace
        self._concurrency = concurrency
        self._fatal = fatal_errors
        self._loop = asyncio.new_event_loop()
        self._setup_error: BaseException | None = None
        try:
            # The local engine's preflight, once per actor before its first shard: the models load
            # now (once per actor) and a VLM server answers one request.
            self._loop.run_until_complete(self._geo.acheck_ready())
        except GeosleuthError as exc:
            # Raised from __call__ instead: Ray reports a failed constructor as a bare ActorDiedError
            # (and restarts the actor), while data reaches the driver as it is.
            self._setup_error = exc

    def __call__(self, shard: dict[str, list[str]]) -> dict[str, list[Any]]:
        """``shard``: ``{"id": [...], "path": [...]}``. A setup error or a fatal error comes back as
        data (one row whose ``stop`` holds it), so the driver raises exactly it, not Ray's wrapping
        of it."""
        try:
            if self._setup_error is not None:
                raise self._setup_error
            items = [BatchItem(str(i), str(p)) for i, p in zip(shard["id"], shard["path"], strict=True)]
            outcomes = self._loop.run_until_complete(
                _locate_shard(self._geo, items, self._top_k, self._with_trace, self._concurrency, self._fatal)
            )
        except (GeosleuthError, *self._fatal) as exc:
            return {"id": [""], "result": [b""], "trace": [""], "stop": [pickle.dumps(exc)]}
        return {
            "id": [r.item.id for r, _ in outcomes],
            # The BatchResult itself (pickled: it holds a Prediction), so the driver writes the very
            # line the local engine would, with BatchResult.to_json_line.
            "result": [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r, _ in outcomes],
            "trace": [t for _, t in outcomes],
            "stop": [b""] * len(outcomes),
        }


async def _locate_shard(
    geo: Any, items: list[BatchItem], top_k: int | None, with_trace: bool, concurrency: int,
    fatal: tuple[type[BaseException], ...],
) -> list[tuple[BatchResult, str]]:
    """One shard through ``geo`` (a Geolocator), up to ``concurrency`` images in flight; each result
    with its trace JSON ("" without ``with_trace``). A function, not a LocateActor method: Ray turns
    a class with any coroutine method into an async actor, which runs calls concurrently."""
    gate = asyncio.Semaphore(concurrency)
    traces: dict[str, str] = {}

    async def locate(item: BatchItem) -> Prediction:
        if not with_trace:
            return await geo.alocate(item.path, top_k=top_k)
        prediction, trace = await geo.alocate_with_trace(item.path, top_k=top_k)
        traces[item.id] = trace.model_dump_json()
        return prediction

    async def one(item: BatchItem) -> tuple[BatchResult, str]:
        async with gate:
            result = await locate_one(item, locate, fatal)
        return result, traces.pop(item.id, "")

    return list(await asyncio.gather(*(one(item) for item in items)))


def run_ray_batch(
    items: Iterable[BatchItem],
    config: Config,
    out_path: str | os.PathLike[str],
    *,
    options: RayBatchOptions | None = None,
    resume: bool = False,
    overwrite: bool = False,
    retry_errors: bool = False,
    retry_degraded: bool = False,
    allow_degraded: bool = False,
    breaker: CircuitBreaker | None = None,
    top_k: int | None = None,
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
    on_trace: TraceCallback | None = None,
    fatal_errors: tuple[type[BaseException], ...] = DEFAULT_FATAL_ERRORS,
    summary: BatchSummary | None = None,
) -> BatchSummary:
    """Locate ``items`` on Ray, appending to ``out_path`` exactly as :func:`geosleuth.agent.batch.run_batch`
    does: same lines, ``resume`` / ``overwrite`` / ``retry_errors`` / ``retry_degraded`` rules, summary
    counts, and the same :class:`Committer` (degraded results held back; unless ``allow_degraded``, a
    :class:`CircuitBreaker` stops the run with :class:`BatchCircuitOpen` when a required stage is down).

    Each actor runs the local engine's preflight (models load, the VLM server answers one request)
    before its first shard: a failure there stops the run with that error (StageUnavailableError,
    ModelNotAvailableError, ...). ``on_trace(item, trace_json)`` receives each image's trace before its
    line is committed (only asked for when given). A ``fatal_errors`` exception in an actor stops the
    run with :class:`BatchAborted`; committed lines stay.
    """
    from geosleuth.ray_session import import_ray, ray_session, unwrap_task_error

    import_ray(data=False)  # fails (saying how to install Ray) before anything is written
    options = options or RayBatchOptions()
    item_list = list(items)
    check_unique(item_list, [f"item {i}" for i in range(len(item_list))], Path("batch input"))
    out = Path(out_path)
    summary = summary if summary is not None else BatchSummary(out)
    summary.out_path, summary.total = out, len(item_list)
    breaker = None if allow_degraded else (breaker or CircuitBreaker())
    order = {item.id: position for position, item in enumerate(item_list)}
    started = time.perf_counter()
    with open_results(
        out, item_list, summary, resume=resume, overwrite=overwrite, retry_errors=retry_errors,
        retry_degraded=retry_degraded,
    ) as (write, done):
        pending = [item for item in item_list if item.id not in done]
        mirror = ParquetMirror(out)

        def write_and_mirror(lines: bytes) -> None:
            write(lines)
            mirror.append(lines)

        committer = Committer(write_and_mirror, summary, breaker, on_result, order)
        if on_start is not None:
            on_start(summary)
        started = time.perf_counter()
        try:
            if pending:
                with ray_session(options.address, num_cpus=options.local_cpus, data=False) as ray:
                    shards = _shards(ray, pending, config, options, top_k, on_trace is not None, fatal_errors)
                    asyncio.run(_commit_all(shards, committer, breaker, mirror, done, on_trace))
        except StageUnavailableError:
            raise  # an actor's preflight: exit 4, as the local engine's
        except Exception as exc:
            cause = unwrap_task_error(exc)  # an unexpected actor exception arrives wrapped in Ray's RayTaskError
            if isinstance(cause, fatal_errors):
                summary.aborted = f"{type(cause).__name__}: {cause}"
                raise BatchAborted(
                    f"batch stopped: {cause}. {summary.done_this_run} image(s) finished this run are in {out}; "
                    "fix the problem and re-run with --resume",
                    summary,
                ) from cause
            if isinstance(cause, GeosleuthError) and cause is not exc:
                raise cause from None
            raise
        finally:
            mirror.flush()
            summary.elapsed_s = time.perf_counter() - started
    if breaker is not None and breaker.tripped:
        raise circuit_open(breaker, summary, out)
    return summary


async def _commit_all(
    shards: Iterable[dict[str, Any]], committer: Committer, breaker: CircuitBreaker | None, mirror: ParquetMirror,
    done: set[str], on_trace: TraceCallback | None,
) -> None:
    """Each finished shard through the committer, result by result (traces first); stops taking
    results when the breaker opens (the rest, and the shards still in flight, are not written)."""
    for shard in shards:
        for stop in shard["stop"]:
            if stop:  # an actor's setup or fatal error: the run stops with it
                raise pickle.loads(stop)
        traces = dict(zip(shard["id"], shard["trace"], strict=True))
        for payload in shard["result"]:
            result: BatchResult = pickle.loads(payload)
            if result.item.id in done:  # a shard delivered twice (a retry): its lines are on disk already
                continue
            done.add(result.item.id)
            if on_trace is not None and traces.get(result.item.id):
                on_trace(result.item, traces[result.item.id])
            await committer.take(result)
            if breaker is not None and breaker.tripped:
                return
        mirror.flush()
    await committer.flush()


def _shards(
    ray: Any, pending: Sequence[BatchItem], config: Config, options: RayBatchOptions, top_k: int | None,
    with_trace: bool, fatal_errors: tuple[type[BaseException], ...],
) -> Iterator[dict[str, Any]]:
    """Runs ``pending`` on a pool of LocateActors; yields each finished shard (columns id, result,
    trace, stop) as soon as it is done, in completion order. The actors are killed when the
    generator ends (also when the driver stops taking shards early), so they free the cluster's
    resources at once, also on a cluster that outlives the run."""
    from geosleuth.ray_session import default_actors, gpus_per_actor

    wanted = options.actors or default_actors(ray, options.cpus_per_actor)
    # Shards no larger than a quarter of an actor's share, so that at the end no actor runs a whole
    # shard alone while the others idle (small runs); never larger than asked.
    shard_size = max(1, min(options.shard_size, -(-len(pending) // (wanted * TAIL_SHARDS))))
    queue = deque(
        {"id": [item.id for item in chunk], "path": [item.path for item in chunk]}
        for chunk in (pending[i : i + shard_size] for i in range(0, len(pending), shard_size))
    )
    size = min(wanted, len(queue))
    actor_class = ray.remote(LocateActor).options(
        num_cpus=options.cpus_per_actor, num_gpus=gpus_per_actor(ray),
        max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS,
    )
    arguments = (config.model_dump(mode="json"), top_k, with_trace, options.concurrency, fatal_errors)
    actors = [actor_class.remote(*arguments) for _ in range(size)]
    queued = {index: 0 for index in range(size)}
    in_flight: dict[Any, int] = {}  # shard result ref -> its actor's index
    try:
        while queue or in_flight:
            for index in range(size):
                while queue and queued[index] < SHARDS_PER_ACTOR:
                    in_flight[actors[index].__call__.remote(queue.popleft())] = index
                    queued[index] += 1
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            queued[in_flight.pop(ref)] -= 1
            yield ray.get(ref)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
