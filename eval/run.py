"""Benchmark runs: a dataset through one preset of the pipeline, scored and reported, resumably.

A run folder holds::

    predictions.jsonl   one line per benchmark image (the batch runner's format; resumable)
    manifest.json       what ran: dataset, preset, overrides, models, gallery, prompts, config hash,
                        source commit, version, times, counts ("dataset" is what `eval compare` reads)
    metrics.json, report.md, per_image.csv, error_cdf.png, world_map.png   (eval.report.write_report)
    missing_images.txt  ids whose image file is missing or unreadable (when there are any)
    traces/             one trace JSON per image (only with ``save_traces``)

(:mod:`.run_folder`: the file names and the checks before resuming into a folder.)

Leakage: every image is located with its own id excluded from gallery retrieval (a gallery that
contains the benchmark image would otherwise hand back its true coordinate); with
``exclude_same_author`` its photographer's other gallery pictures are excluded too (YFCC4K shares
photographers with MP16). Exclusion works on ids and authors as the gallery store records them, so
the benchmark's ids must use the gallery's naming for the own-id exclusion to bite.

Failures are never dropped: an image that is missing, unreadable or gets no coordinate has a line
in predictions.jsonl saying why, and is a miss in every metric.

Degraded answers are not passed off as the preset's: the VLM server gets one request before the first
image (preflight), the circuit breaker stops a run whose required stage goes down, per-step failure
counts go to metrics.json and the manifest, and a run where a required stage was missing for more
than :data:`~.degraded.MAX_DEGRADED_SHARE` of the images is refused (DegradedResultsError) unless
``allow_degraded``; the report's title then says "degraded: N images without <stage>". A preset that
asks for the tool loop (``agent.mode = tools``) on a server that cannot call tools runs the fixed
pipeline: the manifest (``tools_fallback``), the report's notes and a warning say so.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.agent.trace.io import trace_file_name
from geosleuth.config import Config, load_config
from geosleuth.errors import ConfigError, DataFileError, DegradedResultsError
from geosleuth.fileio import atomic_write_text

from .datasets import DATASET_NAMES, GroundTruth, load_dataset, resolve_truth_file
from .degraded import check_degraded, stage_failure_counts
from .presets import DEFAULT_PRESET, get_preset, preset_config
from .provenance import prompt_records, source_commit, utc_now
from .report import MANIFEST_FILE, ReportWarning
from .run_folder import (
    MISSING_IMAGES_FILE,
    PREDICTIONS_FILE,
    TRACES_DIR,
    check_run_folder,
    list_unusable_images,
    write_json_atomic,
)

if TYPE_CHECKING:
    from geosleuth.agent.batch import BatchItem, BatchResult, BatchSummary
    from geosleuth.agent.runtime import Resources
    from geosleuth.api import LocateRequest
    from geosleuth.types import Prediction

    from .metrics import EvalMetrics
    from .report import ReportFiles

ResultCallback = Callable[["BatchResult"], None]
StartCallback = Callable[["BatchSummary"], None]


@dataclass
class RunResult:
    """A finished run: where its files are, its metrics, and what the batch runner did."""

    out_dir: Path
    predictions_path: Path
    manifest_path: Path
    metrics: EvalMetrics
    report: ReportFiles
    summary: BatchSummary  # this invocation (``previously_done``: lines kept from an earlier one)
    manifest: dict[str, Any]
    missing_images: list[str] = field(default_factory=list)  # ids, in dataset order
    notes: list[str] = field(default_factory=list)  # what the report lists under Notes


async def arun_evaluation(
    dataset_name: str,
    truth_path_or_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    preset: str = DEFAULT_PRESET,
    config: Config | None = None,
    limit: int | None = None,
    exclude_same_author: bool = False,
    concurrency: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    overrides: Sequence[str] = (),
    save_traces: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
    on_loaded: Callable[[Resources], None] | None = None,
    allow_degraded: bool = False,
    retry_degraded: bool = False,
) -> RunResult:
    """:func:`run_evaluation` inside a running event loop."""
    from geosleuth.agent.batch import DEFAULT_FATAL_ERRORS, BatchItem, BatchSummary, arun_batch
    from geosleuth.api import Geolocator, LocateRequest
    from geosleuth.vlm.backends import VLMUnavailableError

    if dataset_name not in DATASET_NAMES:
        raise DataFileError(f"unknown dataset {dataset_name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    started_at, started = utc_now(), time.perf_counter()

    # Settings first (cheap, and a typo should not wait for a dataset to load).
    base = config if config is not None else load_config()
    run_config, preset_overrides = preset_config(preset, base, extra_overrides=overrides)
    images = Path(images_dir).expanduser()
    if not images.is_dir():
        raise DataFileError(f"image folder {str(images)!r} does not exist or is not a folder; pass --images DIR")
    truth_file = resolve_truth_file(dataset_name, truth_path_or_dir)

    truth_set = load_dataset(dataset_name, truth_file, images)
    truths = truth_set.records if limit is None else truth_set.records[:limit]
    notes = list(truth_set.warnings)
    without_author = sum(1 for t in truths if not t.author)
    if exclude_same_author:
        if without_author == len(truths):
            raise DataFileError(
                f"{truth_file}: no image has an author, so same-author gallery items cannot be excluded; "
                "use a metadata file with an AUTHOR column, or run without --exclude-same-author"
            )
        if without_author:
            notes.append(
                f"{without_author} of {len(truths)} images have no author: only their own id was excluded from "
                "retrieval, not their photographer's other pictures"
            )

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    identity = {
        "dataset": dataset_name,
        "truth_file": str(truth_file.resolve()),
        "preset": preset,
        "config_hash": run_config.config_hash(),
        "exclude_same_author": exclude_same_author,
    }
    check_run_folder(out, identity, resume=resume, overwrite=overwrite)
    predictions_path = out / PREDICTIONS_FILE
    manifest_path = out / MANIFEST_FILE
    selected = {t.id for t in truths}
    missing = [image_id for image_id in truth_set.missing_images if image_id in selected]

    geo = Geolocator.from_config(run_config)
    commit, dirty = source_commit()
    from geosleuth import __version__

    manifest: dict[str, Any] = {
        **identity,
        "status": "running",
        "preset_description": get_preset(preset).description,
        "overrides": preset_overrides,
        "user_overrides": list(overrides),
        "images_dir": str(images.resolve()),
        "limit": limit,
        "concurrency": None,
        "prompts": prompt_records(run_config),
        "models": {},
        "gallery": None,
        "config": run_config.model_dump(mode="json"),
        "git_commit": commit,
        "git_dirty": dirty,
        "geosleuth_version": __version__,
        "python": platform.python_version(),
        "started_at": started_at,
        "finished_at": None,
        "elapsed_s": None,
        "counts": {"images": len(truths), "missing_images": len(missing)},
        "notes": notes,
    }
    summary = BatchSummary(predictions_path)
    wrote_manifest = False
    try:
        # Models load once, before any image, and a VLM server answers one request (preflight): a bad
        # setup fails here, before the run starts.
        await geo.acheck_ready()
        if geo.tools_fallback:  # the preset asked for the tool loop; the numbers will be the pipeline's
            from geosleuth.agent.toolloop.fallback import fallback_note

            manifest["tools_fallback"] = geo.tools_fallback
            notes.append(fallback_note(geo.tools_fallback))
            warnings.warn(notes[-1], ReportWarning, stacklevel=2)
        resources = geo.resources
        if on_loaded is not None:
            on_loaded(resources)
        store = resources.store
        manifest["models"] = resources.model_ids()
        manifest["load_seconds"] = resources.load_seconds
        manifest["gallery"] = store.manifest.model_dump(mode="json") if getattr(store, "manifest", None) else None
        in_flight = concurrency or 2 * run_config.vlm.concurrency
        manifest["concurrency"] = in_flight
        write_json_atomic(manifest_path, manifest)
        wrote_manifest = True

        requests: dict[str, LocateRequest] = {
            t.id: LocateRequest(
                str(t.image_path),
                exclude_ids=(t.id,),
                exclude_authors=(t.author,) if exclude_same_author and t.author else (),
            )
            for t in truths
        }
        traces_dir = out / TRACES_DIR
        if save_traces:
            traces_dir.mkdir(exist_ok=True)

        async def locate_one(item: BatchItem) -> Prediction:
            request = requests[item.id]
            prediction, trace = await geo.alocate_with_trace(
                request.path, exclude_ids=request.exclude_ids, exclude_authors=request.exclude_authors
            )
            if save_traces:
                target = traces_dir / trace_file_name(item.id)
                await asyncio.to_thread(atomic_write_text, target, trace.model_dump_json())
            return prediction

        try:
            await arun_batch(
                [BatchItem(t.id, str(t.image_path)) for t in truths],
                locate_one,
                predictions_path,
                resume=resume and not overwrite,  # the runner resumes whenever asked to, even with overwrite
                overwrite=overwrite,
                concurrency=in_flight,
                on_start=on_start,
                on_result=on_result,
                fatal_errors=(*DEFAULT_FATAL_ERRORS, VLMUnavailableError),
                summary=summary,
                allow_degraded=allow_degraded,
                retry_degraded=retry_degraded and resume and not overwrite,
            )
        except BaseException as exc:
            interrupted = summary.interrupted or isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
            manifest["status"] = "interrupted" if interrupted else "stopped" if summary.circuit_open else "aborted"
            manifest["stopped_because"] = (
                "interrupted (Ctrl-C)" if interrupted
                else summary.circuit_open or summary.aborted or f"{type(exc).__name__}: {exc}"
            )
            raise
        missing = list_unusable_images(out, truths, missing, predictions_path, notes)
        manifest["counts"]["missing_images"] = len(missing)
        stages = stage_failure_counts(predictions_path, {t.id for t in truths})
        manifest["stage_failures"] = stages
        degraded_title = check_degraded(stages, len(truths), out, allow_degraded=allow_degraded)
        if degraded_title:
            notes.append(f"{degraded_title} (reported with --allow-degraded: these answers lack a required stage)")
        manifest["status"] = "scoring"
    except DegradedResultsError:
        manifest["status"] = "refused: degraded"
        raise
    finally:
        # Keep the record of what ran even when the run stops early (resuming continues it).
        if wrote_manifest:
            manifest["finished_at"] = utc_now()
            manifest["elapsed_s"] = round(time.perf_counter() - started, 3)
            manifest["counts"].update(_batch_counts(summary))
            write_json_atomic(manifest_path, manifest)
        await geo.aclose()

    metrics, report = _score_and_report(
        out, dataset_name, preset, exclude_same_author, truths, predictions_path, resources, notes,
        resamples=resamples, seed=seed, degraded_title=degraded_title, stage_failures=stages,
    )
    manifest["status"] = "complete"
    manifest["finished_at"] = utc_now()
    manifest["elapsed_s"] = round(time.perf_counter() - started, 3)
    manifest["counts"].update(
        {"located": metrics.n - metrics.failures, "failures": metrics.failures,
         "unmatched_predictions": metrics.unmatched_predictions}
    )
    manifest["files"] = {
        "predictions": PREDICTIONS_FILE,
        "metrics": report.metrics_json.name,
        "report": report.report_md.name,
        "per_image": report.per_image_csv.name,
        "plots": [p.name for p in report.plots],
        "missing_images": MISSING_IMAGES_FILE if missing else None,
        "traces": TRACES_DIR if save_traces else None,
    }
    write_json_atomic(manifest_path, manifest)
    return RunResult(
        out_dir=out, predictions_path=predictions_path, manifest_path=manifest_path, metrics=metrics,
        report=report, summary=summary, manifest=manifest, missing_images=missing, notes=notes,
    )


def _batch_counts(summary: BatchSummary) -> dict[str, int]:
    return {
        "previously_done": summary.previously_done,
        "done_this_run": summary.done_this_run,
        "errors_this_run": summary.errors,
        "no_coordinate_this_run": summary.no_coordinate,
        "degraded_this_run": summary.degraded,
    }


def _score_and_report(
    out: Path,
    dataset_name: str,
    preset: str,
    exclude_same_author: bool,
    truths: list[GroundTruth],
    predictions_path: Path,
    resources: Resources,
    notes: list[str],
    *,
    resamples: int,
    seed: int,
    degraded_title: str = "",
    stage_failures: dict[str, dict[str, int]] | None = None,
) -> tuple[EvalMetrics, ReportFiles]:
    from .metrics import evaluate
    from .predictions import read_geosleuth_jsonl
    from .report import write_report

    predictions = read_geosleuth_jsonl(predictions_path).predictions
    metrics = evaluate(truths, predictions, geocoder=resources.geocoder, resamples=resamples, seed=seed)
    if metrics.unmatched_predictions:
        notes.append(
            f"{metrics.unmatched_predictions} line(s) of {PREDICTIONS_FILE} are for images outside this run "
            "(an earlier run of this folder with a larger limit); they are not scored"
        )
    leakage = "own id and same-author gallery items excluded" if exclude_same_author else "own id excluded"
    title = f"{preset} on {dataset_name} ({leakage})" + (f" — {degraded_title}" if degraded_title else "")
    report = write_report(
        out, metrics, truths, predictions, dataset=dataset_name, title=title, notes=notes,
        boundaries=resources.geocoder.boundaries,
        extra_metrics={"stage_failures": stage_failures} if stage_failures is not None else None,
    )
    return metrics, report


def run_evaluation(
    dataset_name: str,
    truth_path_or_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    on_start: StartCallback | None = None,
    **options: Any,
) -> RunResult:
    """Run benchmark ``dataset_name`` through preset ``preset`` into ``out_dir``, score and report it.

    - ``truth_path_or_dir``: the metadata file (or the folder holding it); ``images_dir``: the images.
      Missing or unreadable images are listed (manifest, report, missing_images.txt) and scored as
      failures, never fatal.
    - ``config``: the base configuration (default: :func:`geosleuth.config.load_config`); the preset's
      overrides go on top, then ``overrides`` (``section.key=value``, e.g. the user's ``--set``).
    - ``limit``: only the first ``limit`` images of the dataset, in file order.
    - ``exclude_same_author``: also keep each image's photographer's other pictures out of retrieval.
    - ``resume``: continue a stopped run in ``out_dir`` (images already in predictions.jsonl are
      skipped); a folder that holds a run with other settings is refused. ``overwrite``: start again.
    - ``concurrency``: images in flight (default: 2 x ``vlm.concurrency``).
    - ``save_traces``: one trace JSON per image under ``out_dir/traces``.
    - ``resamples`` / ``seed``: bootstrap intervals of the metrics.

    ``options`` are the keyword arguments of :func:`arun_evaluation` (same names and defaults: ``preset``,
    ``config``, ``limit``, ``exclude_same_author``, ``concurrency``, ``resume``, ``overwrite``, ``overrides``,
    ``save_traces``, ``resamples``, ``seed``, ``on_result``, ``on_loaded``).

    Raises BatchInterrupted (Ctrl-C) or BatchAborted (a setup error, e.g. the VLM server is down);
    the predictions written so far stay, and the manifest says where the run stopped.
    """
    from geosleuth.agent.batch import BatchInterrupted, BatchSummary

    summary_holder: list[BatchSummary] = []

    def remember_start(summary: BatchSummary) -> None:
        summary_holder.append(summary)
        if on_start is not None:
            on_start(summary)

    try:
        return asyncio.run(
            arun_evaluation(
                dataset_name, truth_path_or_dir, images_dir, out_dir, on_start=remember_start, **options
            )
        )
    except KeyboardInterrupt:
        summary = summary_holder[0] if summary_holder else BatchSummary(Path(out_dir) / PREDICTIONS_FILE)
        summary.interrupted = True
        raise BatchInterrupted(
            f"interrupted: {summary.done_this_run} image(s) finished this run are in {summary.out_path}; "
            "run the same command again to resume",
            summary,
        ) from None
