"""`geosleuth eval ...` commands: score a predictions file, compare finished runs with published results."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from geosleuth.cli.common import err_console, user_errors
from geosleuth.errors import DataFileError

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True)


class DatasetChoice(str, Enum):
    im2gps3k = "im2gps3k"
    yfcc4k = "yfcc4k"
    generic = "generic"


class FormatChoice(str, Enum):
    auto = "auto"
    geosleuth_jsonl = "geosleuth-jsonl"
    published_csv = "published-csv"
    table_csv = "table-csv"


class DistanceChoice(str, Enum):
    geodesic = "geodesic"
    haversine = "haversine"


@contextmanager
def _shown_warnings(collected: list[str]) -> Iterator[None]:
    """Print data warnings (swapped header, skipped rows, missing images) on stderr after the step."""
    from geosleuth.eval.datasets import DatasetWarning
    from geosleuth.eval.report import ReportWarning

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            caught = recorded
            warnings.simplefilter("always", DatasetWarning)
            warnings.simplefilter("always", ReportWarning)
            yield
    finally:
        # Outside the recording context, so warnings handed back are not recorded again.
        console = err_console()
        for item in caught:
            if not issubclass(item.category, (DatasetWarning, ReportWarning)):
                # Not ours (e.g. a library's): back to the normal filters.
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
                continue
            message = str(item.message)
            collected.append(message)
            console.print(f"[yellow]warning:[/] {message}", highlight=False)


def _guarded(fn: Callable[[], T], collected: list[str]) -> T:
    with user_errors(), _shown_warnings(collected):
        return fn()


@app.command("score")
def score(
    predictions: Path = typer.Option(
        ..., "--predictions", "-p",
        help="geosleuth batch JSONL, a CSV (our export, or id,lat,lon), or a published per-image CSV (own truth)"
    ),
    truth: Path | None = typer.Option(
        None, "--truth", "-t", help="ground-truth metadata (optional for a published CSV, which carries it)"
    ),
    dataset: DatasetChoice | None = typer.Option(
        None, "--dataset", "-d", help="format of --truth (default: from its file name, else generic)"
    ),
    images: Path | None = typer.Option(
        None, "--images", help="image folder: list ground-truth images that are missing or unreadable"
    ),
    fmt: FormatChoice = typer.Option(
        FormatChoice.auto, "--format",
        help="predictions format (auto: a .csv with truth columns = published, other .csv = table, else JSONL)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON (metrics.json's keys)"),
    resamples: int = typer.Option(1000, "--resamples", min=0, help="bootstrap resamples (0: no intervals)"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999, help="interval level"),
    distance: DistanceChoice = typer.Option(
        DistanceChoice.geodesic, "--distance", help="geodesic (WGS-84, as the papers) or haversine"
    ),
    places: bool = typer.Option(
        True, "--places/--no-places", help="country/region/city accuracy (offline reverse geocoding)"
    ),
    zero_as_failure: bool = typer.Option(
        False, "--zero-as-failure", help="published CSVs: count (0, 0) predictions as failures"
    ),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="also write metrics.json, report.md, per_image.csv and plots here"
    ),
) -> None:
    """Score predictions: accuracy within 1/25/200/750/2500 km, errors, GeoScore, places, with intervals.

    Failures (error lines, missing predictions) count as misses and are reported separately;
    degraded answers (made without a required stage, e.g. the VLM) are counted beside them.
    """
    from geosleuth.eval.datasets import guess_dataset, load_dataset
    from geosleuth.eval.metrics import evaluate
    from geosleuth.eval.predictions import read_predictions
    from geosleuth.eval.report import metrics_table, write_report
    from geosleuth.geo import ReverseGeocoder

    notes: list[str] = []
    pred_file = _guarded(
        lambda: read_predictions(predictions, format=fmt.value, zero_is_failure=zero_as_failure), notes
    )
    if truth is not None:
        dataset_name = dataset.value if dataset else guess_dataset(truth)
        truth_set = _guarded(lambda: load_dataset(dataset_name, truth, images), notes)
        truths = truth_set.records
    elif pred_file.truths is not None:
        if images is not None:
            err_console().print("[yellow]warning:[/] --images is ignored without --truth", highlight=False)
        dataset_name = dataset.value if dataset else guess_dataset(predictions)
        truths = pred_file.truths
    else:
        with user_errors():
            raise DataFileError(
                f"{predictions}: a geosleuth predictions file carries no ground truth; pass --truth FILE"
            )

    metrics = _guarded(
        lambda: evaluate(
            truths,
            pred_file.predictions,
            geocoder=ReverseGeocoder() if places else None,
            resamples=resamples,
            seed=seed,
            confidence=confidence,
            distance=distance.value,
        ),
        notes,
    )
    if metrics.unmatched_predictions:
        err_console().print(
            f"[yellow]warning:[/] {metrics.unmatched_predictions} prediction(s) name images that are not in "
            "the ground truth; they were not scored (is --truth the right file?)",
            highlight=False,
        )
    if report_dir is not None:
        files = _guarded(
            lambda: write_report(
                report_dir,
                metrics,
                truths,
                pred_file.predictions,
                dataset=dataset_name,
                title=f"{predictions.name} on {dataset_name}",
                notes=list(notes),
            ),
            notes,
        )
        err_console().print(f"report written to {files.report_md}", highlight=False)

    if as_json:
        typer.echo(json.dumps(metrics.model_dump(mode="json"), indent=2))
        return
    console = Console()
    console.print(metrics_table(metrics, title=f"{predictions.name} — {dataset_name}, {metrics.distance}"))
    console.print(f"failed: {metrics.failures} of {metrics.n}; degraded: {metrics.degraded} of {metrics.n}"
                  + (" (" + ", ".join(f"{count} without {stage}" for stage, count in metrics.degraded_stages.items())
                     + ")" if metrics.degraded else ""), highlight=False)
    if metrics.failure_reasons:
        top = list(metrics.failure_reasons.items())[:5]
        summary = "; ".join(f"{count} × {reason}" for reason, count in top)
        console.print(f"failures: {summary}", highlight=False)


@app.command("compare")
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="run folders holding metrics.json and manifest.json"),
    markdown: bool = typer.Option(False, "--markdown", help="print markdown tables instead of rich tables"),
) -> None:
    """Show runs beside the published results (GeoCLIP, Img2Loc, G3, GeoRanker) for their dataset."""
    from geosleuth.eval.metrics import EvalMetrics
    from geosleuth.eval.report import compare_markdown, compare_table, load_run

    by_dataset: dict[str, dict[str, EvalMetrics]] = {}
    names_seen: set[str] = set()
    for run_dir in run_dirs:
        with user_errors():
            metrics, manifest = load_run(run_dir)
        # Folder name, or the full path when two runs share a folder name.
        name = run_dir.name if run_dir.name not in names_seen else str(run_dir)
        names_seen.add(run_dir.name)
        by_dataset.setdefault(str(manifest["dataset"]).lower(), {})[name] = metrics
    console = Console()
    for dataset_name, runs in by_dataset.items():
        if markdown:
            typer.echo(f"### {dataset_name}\n\n{compare_markdown(runs, dataset_name)}\n")
        else:
            console.print(compare_table(runs, dataset_name))


class CalibrationMethod(str, Enum):
    isotonic = "isotonic"
    platt = "platt"


@app.command("calibrate")
def calibrate_cmd(
    run_dir: Path = typer.Argument(..., help="a folder written by `geosleuth eval run` (manifest + predictions)"),
    out: Path = typer.Option(..., "--out", "-o", help="calibration JSON to write; point verify.calibration at it"),
    method: CalibrationMethod = typer.Option(CalibrationMethod.isotonic, "--method", help="per-level monotone map"),
    calibration_id: str | None = typer.Option(None, "--id", help="name recorded in traces (default: the run's)"),
    holdout: float = typer.Option(0.25, "--holdout", min=0.05, max=0.5, help="share of images held out for the ECE"),
    seed: int = typer.Option(0, "--seed", help="which images are held out"),
) -> None:
    """Fit the fusion's source weights and per-level confidence maps on an eval run's images.

    Writes a versioned calibration file; its ``fit_report`` has the expected calibration error (ECE)
    per level on held-out images, before (``ece_raw_*``) and after (``ece_*``) calibration.
    """
    from geosleuth.agent.confidence import calibration_json, load_calibration
    from geosleuth.eval.calibration import calibrate, read_run
    from geosleuth.geo import ReverseGeocoder

    notes: list[str] = []
    examples, left_out = _guarded(lambda: read_run(run_dir), notes)
    console = err_console()
    for note in left_out:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    fitted = _guarded(lambda: calibrate(
        examples, ReverseGeocoder(), method=method.value, start=load_calibration(None),
        calibration_id=calibration_id or f"eval-{run_dir.resolve().name}",
        source=f"geosleuth eval calibrate {run_dir} ({len(examples)} images)", holdout=holdout, seed=seed,
    ), notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(calibration_json(fitted), encoding="utf-8")
    report = fitted.fit_report
    typer.echo(f"wrote {out}: {report['images']} images, {report['held_out']} held out; ECE per level "
               "(held out, raw -> calibrated):")
    for level in ("country", "region", "city", "within_25km", "within_200km"):
        typer.echo(f"  {level:<13} {report[f'ece_raw_{level}']:.3f} -> {report[f'ece_{level}']:.3f}")
    typer.echo(f"use it: geosleuth --set verify.calibration={out} locate PHOTO (or verify.calibration in the config)")


# `eval run` and `eval presets` live in their own module.
from geosleuth.cli import eval_run_cmd  # noqa: E402

eval_run_cmd.register(app)
