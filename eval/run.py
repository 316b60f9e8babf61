"""Benchmark runs: a dataset through one preset of the pipeline, scored and reported, resumably.

A run folder holds::

    predictions.jsonl   one line per benchmark image (the batch runner's format; resumable)
    manifest.json       what ran: dataset, preset, overrides, models, gallery, prompts, config hash,
                        source commit, version, times, counts ("dataset" is what `eval compare` reads)
    metrics.json, report.md, per_image.csv, error_cdf.png, world_map.png   (eval.report.write_report)
    missing_images.txt  ids whose image file is missing or unreadable (when there are any)
    traces/             one trace JSON per image (only with ``save_traces``)

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
than :data:`MAX_DEGRADED_SHARE` of the images is refused (DegradedResultsError) unless
``allow_degraded``; the report's title then says "degraded: N images without <stage>".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.config import Config, load_config
from geosleuth.errors import ConfigError, DataFileError, DegradedResultsError
from geosleuth.fileio import atomic_write_json, atomic_write_text

from .datasets import DATASET_NAMES, GroundTruth, load_dataset
from .presets import DEFAULT_PRESET, get_preset, preset_config
from .report import MANIFEST_FILE

if TYPE_CHECKING:
    from geosleuth.agent.batch import BatchItem, BatchResult, BatchSummary
    from geosleuth.agent.runtime import Resources
    from geosleuth.api import LocateRequest
    from geosleuth.types import Prediction

    from .metrics import EvalMetrics
    from .report import ReportFiles

PREDICTIONS_FILE = "predictions.jsonl"
MISSING_IMAGES_FILE = "missing_images.txt"
TRACES_DIR = "traces"
# Known metadata file names, for a truth *folder* (the benchmarks' own names first).
TRUTH_FILE_NAMES = {
    "im2gps3k": ("im2gps3k_places365.csv",),
    "yfcc4k": ("yfcc4k_places365.csv", "yfcc4k.csv"),
}
# Settings of a run folder that must not change when a run is resumed into it: the lines already
# there were made with them.
_IDENTITY_KEYS = ("dataset", "truth_file", "preset", "config_hash", "exclude_same_author")
_MAX_LISTED_MISSING = 20
# A preset is reported as itself only when its required stages answered for all but this share of images.
MAX_DEGRADED_SHARE = 0.01

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


def resolve_truth_file(dataset_name: str, truth_path_or_dir: str | os.PathLike[str]) -> Path:
    """The metadata file: ``truth_path_or_dir`` itself, or the one dataset file inside that folder."""
    path = Path(truth_path_or_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataFileError(f"ground truth {str(path)!r} does not exist; give the metadata CSV/JSONL or its folder")
    for name in TRUTH_FILE_NAMES.get(dataset_name, ()):
        if (path / name).is_file():
            return path / name
    if dataset_name in TRUTH_FILE_NAMES:
        found = sorted(p for p in path.glob("*.csv") if dataset_name in p.name.lower())
    else:
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".jsonl", ".ndjson"))
    if len(found) == 1:
        return found[0]
    wanted = ", ".join(TRUTH_FILE_NAMES.get(dataset_name, ("one .csv or .jsonl file",)))
    listed = f" (found {', '.join(p.name for p in found)})" if found else ""
    raise DataFileError(
        f"cannot tell which file in {str(path)!r} is the {dataset_name} ground truth{listed}; "
        f"expected {wanted}: pass the file itself with --truth"
    )


def trace_file_name(image_id: str) -> str:
    """A file name for an image id (``sub/a.jpg`` -> ``sub_a.jpg-<hash>.json``); distinct ids never
    share one, because a hash is added whenever the id had to be changed."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._") or "image"
    if safe != image_id:
        safe = f"{safe[:100]}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"
    return f"{safe}.json"


def source_commit() -> tuple[str | None, bool | None]:
    """(commit, has local changes) of the git checkout this package runs from; (None, None) when it
    does not run from one (an installed wheel, or no git)."""
    import geosleuth

    package_dir = Path(geosleuth.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    # The package must be tracked by that repository: an installed copy inside some other checkout
    # (a venv in a project folder) must not report the project's commit.
    if git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None, None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain")
    return commit.strip(), None if status is None else bool(status.strip())


def prompt_records(config: Config) -> list[dict[str, str]]:
    """Id, version and hash of each prompt template a run with ``config`` uses (none without a VLM)."""
    if config.vlm.backend == "none":
        return []
    from geosleuth.agent.reason import REPAIR_TEMPLATE_ID
    from geosleuth.prompts.render import load_template

    records = []
    for template_id in (config.prompts.reasoning_template, REPAIR_TEMPLATE_ID):
        template = load_template(template_id)
        records.append({"id": template.id, "version": template.version, "sha256": template.sha256})
    return records


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """A killed run leaves the old file or the new one, never half of one."""
    atomic_write_json(path, data, default=str)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(
            f"{path}: not readable JSON ({exc}); delete the run folder or choose another --out"
        ) from None
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: expected a JSON object; delete the run folder or choose another --out")
    return data


def _check_run_folder(out: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix results of different settings in one predictions file."""
    predictions = out / PREDICTIONS_FILE
    if not predictions.is_file() or predictions.stat().st_size == 0 or overwrite:
        return
    if not resume:
        raise DataFileError(
            f"{out} already holds a run ({PREDICTIONS_FILE}); resume it, replace it (--overwrite), or choose "
            "another --out"
        )
    previous = _read_manifest(out / MANIFEST_FILE)
    if previous is None:
        raise DataFileError(
            f"{out} has {PREDICTIONS_FILE} but no {MANIFEST_FILE}, so nothing says which settings made those "
            "predictions; choose another --out, or replace it (--overwrite)"
        )
    changed = [key for key in _IDENTITY_KEYS if previous.get(key) != identity[key]]
    if changed:
        differences = "; ".join(f"{key}: {previous.get(key)!r} there, {identity[key]!r} now" for key in changed)
        raise DataFileError(
            f"{out} holds a run with other settings ({differences}); resuming would mix their predictions. "
            "Choose another --out for these settings, or replace that run (--overwrite)"
        )


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
    started_at, started = _now(), time.perf_counter()

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
    _check_run_folder(out, identity, resume=resume, overwrite=overwrite)
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
        resources = geo.resources
        if on_loaded is not None:
            on_loaded(resources)
        store = resources.store
        manifest["models"] = resources.model_ids()
        manifest["load_seconds"] = resources.load_seconds
        manifest["gallery"] = store.manifest.model_dump(mode="json") if getattr(store, "manifest", None) else None
        in_flight = concurrency or 2 * run_config.vlm.concurrency
        manifest["concurrency"] = in_flight
        _write_json_atomic(manifest_path, manifest)
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
        missing = _list_unusable_images(out, truths, missing, predictions_path, notes)
        manifest["counts"]["missing_images"] = len(missing)
        stages = stage_failure_counts(predictions_path, {t.id for t in truths})
        manifest["stage_failures"] = stages
        degraded_title = _check_degraded(stages, len(truths), out, allow_degraded=allow_degraded)
        if degraded_title:
            notes.append(f"{degraded_title} (reported with --allow-degraded: these answers lack a required stage)")
        manifest["status"] = "scoring"
    except DegradedResultsError:
        manifest["status"] = "refused: degraded"
        raise
    finally:
        # Keep the record of what ran even when the run stops early (resuming continues it).
        if wrote_manifest:
            manifest["finished_at"] = _now()
            manifest["elapsed_s"] = round(time.perf_counter() - started, 3)
            manifest["counts"].update(_batch_counts(summary))
            _write_json_atomic(manifest_path, manifest)
        await geo.aclose()

    metrics, report = _score_and_report(
        out, dataset_name, preset, exclude_same_author, truths, predictions_path, resources, notes,
        resamples=resamples, seed=seed, degraded_title=degraded_title, stage_failures=stages,
    )
    manifest["status"] = "complete"
    manifest["finished_at"] = _now()
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
    _write_json_atomic(manifest_path, manifest)
    return RunResult(
        out_dir=out, predictions_path=predictions_path, manifest_path=manifest_path, metrics=metrics,
        report=report, summary=summary, manifest=manifest, missing_images=missing, notes=notes,
    )


def _list_unusable_images(
    out: Path, truths: list[GroundTruth], missing: list[str], predictions_path: Path, notes: list[str]
) -> list[str]:
    """Ids of the images that could not be read: missing files (the loader's check) and files the
    pipeline could not decode (their error lines); written to missing_images.txt and noted."""
    from geosleuth.agent.batch import scan_results

    unreadable = {
        record.id for record in scan_results(predictions_path).records if record.error_type == "ImageLoadError"
    }
    unusable = set(missing) | unreadable
    listed = [t.id for t in truths if t.id in unusable]
    missing_path = out / MISSING_IMAGES_FILE
    if not listed:
        missing_path.unlink(missing_ok=True)  # from an earlier run of this folder whose images have since appeared
        return listed
    missing_path.write_text("".join(f"{image_id}\n" for image_id in listed), encoding="utf-8")
    shown = ", ".join(listed[:_MAX_LISTED_MISSING])
    more = f" and {len(listed) - _MAX_LISTED_MISSING} more" if len(listed) > _MAX_LISTED_MISSING else ""
    notes.append(
        f"missing or unreadable images, counted as failures (all {len(listed)} in {MISSING_IMAGES_FILE}): "
        f"{shown}{more}"
    )
    return listed


def _batch_counts(summary: BatchSummary) -> dict[str, int]:
    return {
        "previously_done": summary.previously_done,
        "done_this_run": summary.done_this_run,
        "errors_this_run": summary.errors,
        "no_coordinate_this_run": summary.no_coordinate,
        "degraded_this_run": summary.degraded,
    }


def stage_failure_counts(predictions_path: Path, ids: set[str]) -> dict[str, dict[str, int]]:
    """Over the run's lines (``ids``): images by status, images in which each step recorded a failure,
    and images answered without each required stage."""
    from collections import Counter

    from geosleuth.agent.batch import scan_results

    status: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for record in scan_results(predictions_path).records:
        if record.id not in ids:
            continue
        status[record.status] += 1
        if record.prediction is None:
            steps["perceive"] += 1  # the locate call raised: the image could not be read
            continue
        steps.update({failure.step for failure in record.prediction.failures})
        missing.update(record.prediction.missing_stages)
    return {"status": dict(status), "failures_by_step": dict(steps), "missing_stages": dict(missing)}


def _check_degraded(stages: dict[str, dict[str, int]], n_images: int, out: Path, *, allow_degraded: bool) -> str:
    """The report title's degraded note ("" when none); raises DegradedResultsError when a required
    stage was missing for more than MAX_DEGRADED_SHARE of the images and that is not allowed."""
    missing = stages["missing_stages"]
    if not missing:
        return ""
    title = "degraded: " + ", ".join(f"{count} images without {stage}" for stage, count in sorted(missing.items()))
    worst = max(missing.values())
    if not allow_degraded and worst > MAX_DEGRADED_SHARE * n_images:
        raise DegradedResultsError(
            f"{title} of {n_images} (more than {MAX_DEGRADED_SHARE:.0%}), so this run is not reported as its "
            f"preset; the predictions are kept in {out / PREDICTIONS_FILE}. Bring the stage back and run the same "
            "command with --retry-degraded, or pass --allow-degraded to report it, titled as degraded"
        )
    return title


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
