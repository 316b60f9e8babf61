"""Run reports: metrics.json, per-image CSV, a markdown report and plots; tables beside published results.

``write_report`` is all a run command needs to call once it has truths, predictions and metrics.
Plots use matplotlib's object API with the Agg canvas (no pyplot global state, no display); the
world map draws land and borders from the geocoder's own Natural Earth polygons
(``geosleuth.geo.basemap``), zoomed to the points. Without matplotlib the report says the plots
were skipped and why.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from geosleuth.errors import DataFileError
from geosleuth.geo.boundaries import CountryBoundaries

from .anchors import ANCHOR_THRESHOLDS_KM, anchors_for
from .datasets import GroundTruth
from .metrics import Estimate, EvalMetrics, matched_distances_km
from .predictions import PredictedLocation, match_to_truth

METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.md"
PER_IMAGE_FILE = "per_image.csv"
ERROR_CDF_FILE = "error_cdf.png"
WORLD_MAP_FILE = "world_map.png"


class ReportWarning(UserWarning):
    """Part of a report could not be produced; the message says which and why."""


@dataclass
class ReportFiles:
    metrics_json: Path
    report_md: Path
    per_image_csv: Path
    plots: list[Path] = field(default_factory=list)
    plots_skipped: str | None = None  # why no plots were drawn


def _as_metrics(metrics: EvalMetrics | Mapping[str, Any]) -> EvalMetrics:
    return metrics if isinstance(metrics, EvalMetrics) else EvalMetrics.model_validate(metrics)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100.0 * value:.2f}"


def _pct_ci(est: Estimate | None) -> str:
    if est is None or est.value is None:
        return "—"
    if est.ci is None:
        return _pct(est.value)
    return f"{_pct(est.value)} [{_pct(est.ci[0])}, {_pct(est.ci[1])}]"


def _num_ci(est: Estimate | None, fmt: str = "{:.1f}") -> str:
    if est is None or est.value is None:
        return "—"
    text = fmt.format(est.value)
    if est.ci is not None:
        text += f" [{fmt.format(est.ci[0])}, {fmt.format(est.ci[1])}]"
    return text


def metrics_rows(metrics: EvalMetrics | Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value with 95% interval, what it covers) rows shared by the rich and markdown tables."""
    m = _as_metrics(metrics)
    rows: list[tuple[str, str, str]] = []
    for threshold, est in m.acc_km.items():
        rows.append((f"within {threshold} km (%)", _pct_ci(est), f"all {est.n} images"))
    rows.append(("mean error (km)", _num_ci(m.mean_km), f"{m.mean_km.n} successful predictions"))
    rows.append(("median error (km)", _num_ci(m.median_km), f"{m.median_km.n} successful predictions"))
    rows.append(("GeoScore (mean, 0-5000)", _num_ci(m.geoscore, "{:.0f}"), f"all {m.geoscore.n} images"))
    for name, est in (("country", m.country), ("region", m.region), ("city", m.city)):
        if est is not None:
            rows.append((f"same {name} (%)", _pct_ci(est), f"all {est.n} images"))
    rows.append(("failures", str(m.failures), "counted as misses above"))
    if m.unmatched_predictions:
        rows.append(("unmatched predictions", str(m.unmatched_predictions), "not in the truth, not scored"))
    return rows


def _value_header(m: EvalMetrics) -> str:
    return f"value [{100 * m.bootstrap.confidence:g}% CI]" if m.bootstrap.resamples else "value"


def metrics_table(metrics: EvalMetrics | Mapping[str, Any], *, title: str | None = None) -> Table:
    """A rich table of one run's metrics with their bootstrap intervals."""
    m = _as_metrics(metrics)
    table = Table(title=title or f"{m.n} images, {m.failures} failures — distances {m.distance}")
    table.add_column("metric")
    table.add_column(_value_header(m), justify="right")
    table.add_column("over")
    for name, value, note in metrics_rows(m):
        table.add_row(name, value, note)
    return table


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_markdown(metrics: EvalMetrics | Mapping[str, Any]) -> str:
    m = _as_metrics(metrics)
    return _md_table(("metric", _value_header(m), "over"), metrics_rows(m))


@dataclass(frozen=True)
class CompareRow:
    system: str
    published: bool
    n: int | None
    failures: int | None
    acc: tuple[Estimate | None, ...]  # fractions at ANCHOR_THRESHOLDS_KM


def compare_rows(
    metrics_by_run: Mapping[str, EvalMetrics | Mapping[str, Any]], dataset: str
) -> list[CompareRow]:
    """Each run (with its intervals), then the published results on ``dataset``."""
    rows: list[CompareRow] = []
    for name, raw in metrics_by_run.items():
        m = _as_metrics(raw)
        acc = tuple(m.acc_km.get(str(t)) for t in ANCHOR_THRESHOLDS_KM)
        rows.append(CompareRow(name, False, m.n, m.failures, acc))
    for anchor in anchors_for(dataset):
        acc = tuple(Estimate(value=anchor.acc_fraction(t), n=0) for t in ANCHOR_THRESHOLDS_KM)
        rows.append(CompareRow(anchor.system, True, None, None, acc))
    return rows


def _count(value: int | None) -> str:
    return "—" if value is None else str(value)


def compare_table(metrics_by_run: Mapping[str, EvalMetrics | Mapping[str, Any]], dataset: str) -> Table:
    """Our runs beside the published results for the same dataset, as a rich table."""
    rows = compare_rows(metrics_by_run, dataset)
    table = Table(
        title=f"{dataset}: % of images within each distance",
        caption="ours: value and 95% bootstrap interval; (paper): as published",
    )
    # Numbers never wrap or get cut; the system column wraps instead on a narrow terminal.
    table.add_column("system")
    for t in ANCHOR_THRESHOLDS_KM:
        table.add_column(f"{t} km", justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        cells = []
        for est in row.acc:
            if est is None or est.value is None:
                cells.append("—")
            elif est.ci is None:
                cells.append(_pct(est.value))
            else:
                cells.append(f"{_pct(est.value)}\n[dim]{100 * est.ci[0]:.1f}–{100 * est.ci[1]:.1f}[/]")
        if row.published:
            name = f"{row.system} [dim](paper)[/]"
        else:
            name = f"{row.system}\n[dim]n={row.n}, {row.failures} failures[/]"
        last_ours = not row.published and (i + 1 == len(rows) or rows[i + 1].published)
        table.add_row(name, *cells, end_section=last_ours)
    return table


def compare_markdown(metrics_by_run: Mapping[str, EvalMetrics | Mapping[str, Any]], dataset: str) -> str:
    """The same comparison as :func:`compare_table`, as a markdown table."""
    header = ["system", "n", "failures"] + [f"{t} km (%)" for t in ANCHOR_THRESHOLDS_KM]
    lines = [
        [f"{row.system} (published)" if row.published else row.system, _count(row.n), _count(row.failures)]
        + [_pct_ci(est) for est in row.acc]
        for row in compare_rows(metrics_by_run, dataset)
    ]
    return _md_table(header, lines)


def load_run(run_dir: str | os.PathLike[str]) -> tuple[EvalMetrics, dict[str, Any]]:
    """A finished run's metrics and manifest (the manifest must name its "dataset")."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DataFileError(f"{root}: not a run directory (it does not exist or is not a folder)")
    out: list[dict[str, Any]] = []
    for name in (METRICS_FILE, MANIFEST_FILE):
        path = root / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataFileError(
                f"{path}: missing; is {root} a finished run? (runs write {METRICS_FILE} and {MANIFEST_FILE})"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFileError(f"{path}: not readable JSON ({exc}); re-run or re-score the run") from None
        if not isinstance(data, dict):
            raise DataFileError(f"{path}: expected a JSON object")
        out.append(data)
    metrics_raw, manifest = out
    if not isinstance(manifest.get("dataset"), str) or not manifest["dataset"]:
        raise DataFileError(f"{root / MANIFEST_FILE}: no \"dataset\" key; cannot tell which benchmark it ran")
    try:
        metrics = EvalMetrics.model_validate(metrics_raw)
    except ValueError as exc:
        raise DataFileError(f"{root / METRICS_FILE}: not a geosleuth metrics file ({exc})") from None
    return metrics, manifest


def _write_per_image(
    path: Path, truths: Sequence[GroundTruth], preds: Sequence[PredictedLocation], dist: Sequence[float]
) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "truth_lat", "truth_lon", "pred_lat", "pred_lon", "distance_km", "failure"])
        for t, p, d in zip(truths, preds, dist, strict=True):
            writer.writerow([
                t.id, t.lat, t.lon,
                "" if p.lat is None else p.lat, "" if p.lon is None else p.lon,
                "" if math.isnan(d) else f"{d:.3f}", p.failure or "",
            ])


def _plot_error_cdf(path: Path, dist: Sequence[float], n: int, thresholds: Sequence[int]) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    errors = np.sort(np.asarray([d for d in dist if not math.isnan(d)], dtype=float))
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if errors.size:
        # y is over all n images, so failures keep the curve below 1 instead of vanishing.
        x = np.maximum(errors, 0.01)
        y = np.arange(1, errors.size + 1) / n
        ax.step(np.concatenate([[0.01], x]), np.concatenate([[0.0], y]), where="post", color="tab:blue")
    for t in thresholds:
        ax.axvline(float(t), color="grey", linewidth=0.6, linestyle=":")
        ax.text(float(t), 1.01, f"{t} km", fontsize=7, ha="center", va="bottom",
                transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_xlim(0.1, 20050.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("error (km, log scale)")
    ax.set_ylabel("fraction of all images within error")
    ax.set_title(f"Error CDF ({errors.size} predictions, {n - errors.size} failures)", fontsize=10, pad=14)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def world_map_bbox(truths: Sequence[GroundTruth], preds: Sequence[PredictedLocation]) -> tuple[
    float, float, float, float
]:
    """The world map's extent: zoomed to the truths and predictions (a country-sized test set gets a
    country-sized map), with the plot's aspect ratio."""
    from geosleuth.geo.basemap import bbox_around

    points = [(t.lat, t.lon) for t in truths] + [p.ranked[0] for p in preds if p.ok]
    return bbox_around(points, pad_deg=2.0, min_span_deg=4.0, aspect=1.85)


def _plot_world_map(path: Path, truths: Sequence[GroundTruth], preds: Sequence[PredictedLocation],
                    boundaries: CountryBoundaries | None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from geosleuth.geo.basemap import draw_basemap

    fig = Figure(figsize=(10, 5.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ok = [p.ranked[0] for p in preds if p.ok]
    bbox = world_map_bbox(truths, preds)
    draw_basemap(ax, bbox, boundaries=boundaries)

    def x(lon: float) -> float:  # a map across the antimeridian has longitudes above 180
        return lon + 360.0 if lon < bbox[0] else lon

    # Truth-to-prediction segments; those going the long way round the map are left out.
    pairs = [(t, p.ranked[0]) for t, p in zip(truths, preds, strict=True) if p.ok]
    segments = [[(x(t.lon), t.lat), (x(lon), lat)] for t, (lat, lon) in pairs if abs(x(t.lon) - x(lon)) <= 180.0]
    if segments:
        ax.add_collection(LineCollection(segments, colors="grey", linewidths=0.4, alpha=0.35))
    ax.scatter([x(t.lon) for t in truths], [t.lat for t in truths], s=6, c="tab:green", label="truth", alpha=0.8)
    ax.scatter([x(lon) for _, lon in ok], [lat for lat, _ in ok], s=6, c="tab:red", marker="x",
               label="prediction", alpha=0.8, linewidths=0.6)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.grid(True, alpha=0.2)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"Truths and predictions (equirectangular, Natural Earth 1:10m borders; "
                 f"{len(truths) - len(ok)} failures not shown)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _dataset_from_manifest(root: Path) -> str | None:
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = manifest.get("dataset") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else None


def _rva_markdown(m: EvalMetrics) -> str:
    if not m.rva:
        return ""
    parts = [
        "## Recall vs area",
        "",
        "Each ranked candidate stands for a spherical cap of the given radius; searching the first k "
        "candidates costs k caps (overlaps counted twice). Recall is over all images.",
        "",
    ]
    for curve in m.rva:
        rows = [[str(p.k), f"{p.area_km2:,.0f}", _pct(p.recall)] for p in curve.points]
        table = _md_table(("k", "area (km²)", "recall (%)"), rows)
        parts += [f"Radius {curve.radius_km:g} km:", "", table, ""]
    return "\n".join(parts)


RELIABILITY_FILE = "reliability.png"


def _confidence_section(root: Path, matched: Any, files: ReportFiles) -> list[str]:
    """ECE per level and reliability diagrams, when the predictions state per-level probabilities."""
    from geosleuth.geo import ReverseGeocoder

    from .calibration import calibration_markdown, level_outcomes, plot_reliability

    preds = matched.predictions
    if not any(p.levels for p in preds):
        return []
    outcome = level_outcomes([(t.lat, t.lon) for t in matched.truths],
                             [(p.lat, p.lon) if p.ok else None for p in preds], [p.levels for p in preds],
                             ReverseGeocoder())
    lines = ["## Confidence calibration", "",
             "Each stated probability (P country/region/city right, P within 25/200 km) against how often it "
             "came true; ECE = expected calibration error over 10 equal-width bins (0 = perfectly calibrated). "
             "Refit with `geosleuth eval calibrate` on a run of your own data.", "", calibration_markdown(outcome), ""]
    if files.plots_skipped is None:
        plot_reliability(root / RELIABILITY_FILE, outcome)
        files.plots.append(root / RELIABILITY_FILE)
        lines += [f"![reliability diagrams]({RELIABILITY_FILE})", ""]
    return lines


def write_report(
    run_dir: str | os.PathLike[str],
    metrics: EvalMetrics | Mapping[str, Any],
    truths: Sequence[GroundTruth],
    predictions: Sequence[PredictedLocation],
    *,
    dataset: str | None = None,
    title: str | None = None,
    notes: Sequence[str] = (),
    boundaries: CountryBoundaries | None = None,
    extra_metrics: Mapping[str, Any] | None = None,
) -> ReportFiles:
    """Write metrics.json, per_image.csv, report.md and plots into ``run_dir`` (created if needed).

    ``dataset`` (default: manifest.json's "dataset" when present) adds the published results for
    that benchmark to the report. ``notes`` (e.g. loader warnings) are listed in the report.
    ``boundaries``: the country polygons for the world map (e.g. ``geocoder.boundaries``); None loads them.
    ``extra_metrics`` (e.g. a run's per-step failure counts) are added to metrics.json.
    """
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    m = _as_metrics(metrics)
    dataset = dataset or _dataset_from_manifest(root)

    metrics_path = root / METRICS_FILE
    metrics_path.write_text(
        json.dumps({**m.model_dump(mode="json"), **(extra_metrics or {})}, indent=2) + "\n", encoding="utf-8"
    )

    matched = match_to_truth(truths, predictions)
    method = "haversine" if m.distance.startswith("haversine") else "geodesic"
    dist = matched_distances_km(matched, method=method).tolist()
    per_image_path = root / PER_IMAGE_FILE
    _write_per_image(per_image_path, matched.truths, matched.predictions, dist)

    files = ReportFiles(metrics_path, root / REPORT_FILE, per_image_path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        files.plots_skipped = "matplotlib is not installed (pip install matplotlib)"
    if files.plots_skipped is None:
        thresholds = [int(t) for t in m.acc_km]
        _plot_error_cdf(root / ERROR_CDF_FILE, dist, m.n, thresholds)
        _plot_world_map(root / WORLD_MAP_FILE, matched.truths, matched.predictions, boundaries)
        files.plots = [root / ERROR_CDF_FILE, root / WORLD_MAP_FILE]
    else:
        warnings.warn(f"{root}: plots skipped: {files.plots_skipped}", ReportWarning, stacklevel=2)

    parts = [
        f"# {title or 'geosleuth evaluation'}",
        "",
        f"Dataset: {dataset or 'unknown'}. Images: {m.n}. Failures: {m.failures} (counted as misses). "
        f"Distances: {m.distance}. Intervals: {100 * m.bootstrap.confidence:g}% percentile bootstrap, "
        f"{m.bootstrap.resamples} resamples, seed {m.bootstrap.seed}.",
        "",
        "## Metrics",
        "",
        metrics_markdown(m),
        "",
    ]
    if m.country is not None:
        parts += [
            "Places: ground truth and prediction are reverse-geocoded by the same geocoder, never taken from "
            "the dataset's own place columns, so country / region / city accuracy compares from run to run; a "
            f"truth at sea has no country and counts as a miss. How: {m.places or 'not recorded'}.",
            "",
        ]
    if dataset and anchors_for(dataset):
        parts += [
            "## Beside published results",
            "",
            compare_markdown({"this run": m}, dataset),
            "",
            "Published numbers are as printed; several of those codebases score unparseable answers as "
            "(0, 0) instead of counting them as failures.",
            "",
        ]
    if m.failure_reasons:
        rows = [[reason, str(count)] for reason, count in m.failure_reasons.items()]
        parts += ["## Failures", "", _md_table(("reason", "images"), rows), ""]
    rva = _rva_markdown(m)
    if rva:
        parts += [rva, ""]
    parts += _confidence_section(root, matched, files)
    parts += ["## Plots", ""]
    if files.plots:
        parts += [f"![error CDF]({ERROR_CDF_FILE})", "", f"![world map]({WORLD_MAP_FILE})", ""]
    else:
        parts += [f"Plots skipped: {files.plots_skipped}.", ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    parts += [f"Per-image results: [{PER_IMAGE_FILE}]({PER_IMAGE_FILE}).", ""]
    files.report_md.write_text("\n".join(parts), encoding="utf-8")
    return files
