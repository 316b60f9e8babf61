"""Prediction files: geosleuth's batch JSONL and other systems' published per-image CSVs.

geosleuth JSONL, one object per line, either
  ``{"id": ..., "prediction": {<geosleuth.types.Prediction>}}``  (a prediction; it may itself be a
  failure: lat/lon null with a failure_reason), or
  ``{"id": ..., "error": "..."}``                                  (the image could not be processed),
or a Prediction's own fields with an extra "id" key (flat form).

Prediction tables (CSV): an id column and a coordinate, e.g. ``geosleuth export --format csv``
(id, path, status, lat, lon, ..., missing_stages, failure_reason, error) or a plain ``id,lat,lon``
table (aliases: :data:`_TABLE_ALIASES`); an empty coordinate is a failure, and a ``status`` of
"degraded" is kept (with ``missing_stages``).

Published CSVs (e.g. G3's per-image results) carry their own truth: columns such as img_id, gt_lat,
gt_long, predicted_lat, predicted_long (aliases: :data:`_PUBLISHED_ALIASES`). Rows whose id is a
summary word ("accuracy", "mean", ...) or whose ground truth is not a number are not data: they are
skipped with a warning. A data row whose predicted coordinate is empty/unparseable is a failure.

Every prediction keeps its failure explicit (``failure`` is set, ``lat``/``lon`` are None): a
failure is never turned into a coordinate.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from geosleuth.errors import DataFileError
from geosleuth.geo import haversine_km
from geosleuth.types import Prediction

from .datasets import (
    DatasetWarning,
    GroundTruth,
    _find_column,
    _parse_float,
    _read_csv_rows,
    detect_swapped_lat_lon,
    wrap_lon,
)

PredictionFormat = Literal["geosleuth-jsonl", "published-csv", "table-csv"]

NO_PREDICTION = "no prediction for this image"

# Candidates closer than this to an earlier one are the same candidate (the winner is usually
# repeated as the first alternative).
_SAME_CANDIDATE_KM = 0.001

_SUMMARY_IDS = frozenset(
    {"accuracy", "acc", "mean", "median", "average", "avg", "total", "summary", "overall", "all", "result"}
)

_PUBLISHED_ALIASES = {  # lower case; matched case-insensitively
    "id": ("img_id", "image_id", "id", "image", "img", "filename", "file"),
    "gt_lat": ("gt_lat", "true_lat", "truth_lat", "lat_gt", "gt_latitude", "lat"),
    "gt_lon": (
        "gt_long", "gt_lon", "gt_lng", "true_lon", "true_long", "truth_lon", "lon_gt", "gt_longitude", "lon",
    ),
    "pred_lat": ("predicted_lat", "pred_lat", "prediction_lat", "lat_pred", "predicted_latitude"),
    "pred_lon": (
        "predicted_long", "predicted_lon", "pred_lon", "pred_long", "pred_lng",
        "prediction_lon", "lon_pred", "predicted_longitude",
    ),
}


_TABLE_ALIASES = {  # a predictions table without its own truth; lower case, matched case-insensitively
    "id": ("id", "img_id", "image_id", "image", "img", "filename", "file", "path"),
    "lat": ("lat", "latitude", "pred_lat", "predicted_lat", "predicted_latitude"),
    "lon": ("lon", "lng", "long", "longitude", "pred_lon", "pred_long", "predicted_lon", "predicted_long",
            "predicted_longitude"),
}
# A table row without a coordinate takes its reason from the first of these that is filled in.
_TABLE_REASON_COLUMNS = ("failure_reason", "error", "status")


@dataclass(frozen=True)
class PredictedLocation:
    """One system's answer for one image: a coordinate, or a failure with its reason."""

    id: str
    lat: float | None
    lon: float | None
    failure: str | None = None
    # Ranked candidate coordinates, best first, starting with (lat, lon) (filled in when not given);
    # empty for failures.
    ranked: tuple[tuple[float, float], ...] = ()
    line: int | None = None  # where it came from in its file
    # Required stages the answer was made without (a degraded answer); empty for complete answers.
    missing_stages: tuple[str, ...] = ()
    # Calibrated per-level probabilities (LevelConfidence field -> value) when the system gave them.
    levels: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if (self.lat is None) != (self.lon is None):
            raise ValueError(f"prediction {self.id!r}: latitude and longitude must both be given or both absent")
        if self.lat is None:
            if not self.failure:
                raise ValueError(f"prediction {self.id!r}: no coordinate, so a failure reason is required")
            if self.ranked:
                raise ValueError(f"prediction {self.id!r}: a failure cannot carry ranked candidates")
        elif self.failure:
            raise ValueError(f"prediction {self.id!r}: has a coordinate and a failure reason; pick one")
        elif not self.ranked:
            object.__setattr__(self, "ranked", ((self.lat, self.lon),))

    @property
    def ok(self) -> bool:
        return self.lat is not None

    @property
    def degraded(self) -> bool:
        """A coordinate made without a stage the configuration asked for."""
        return self.ok and bool(self.missing_stages)

    @classmethod
    def failed(cls, image_id: str, reason: str, line: int | None = None) -> PredictedLocation:
        return cls(image_id, None, None, reason or "unspecified failure", (), line)


@dataclass
class PredictionFile:
    """Predictions read from one file; ``truths`` is set when the file carries its own ground truth."""

    path: Path
    format: PredictionFormat
    predictions: list[PredictedLocation]
    truths: list[GroundTruth] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def has_rankings(self) -> bool:
        """Whether any prediction carries more than one ranked candidate (needed for recall vs area)."""
        return any(len(p.ranked) > 1 for p in self.predictions)


def _warn(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, DatasetWarning, stacklevel=3)


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return float(haversine_km(a[0], a[1], b[0], b[1])) < _SAME_CANDIDATE_KM


def _ranked_from_prediction(prediction: Prediction) -> tuple[tuple[float, float], ...]:
    if prediction.lat is None or prediction.lon is None:
        return ()
    ranked: list[tuple[float, float]] = [(prediction.lat, prediction.lon)]
    for alt in prediction.alternatives:
        point = (alt.lat, alt.lon)
        if not any(_close(point, seen) for seen in ranked):
            ranked.append(point)
    return tuple(ranked)


def from_prediction(image_id: str, prediction: Prediction, line: int | None = None) -> PredictedLocation:
    """A :class:`PredictedLocation` for a geosleuth Prediction (its failure_reason kept)."""
    if not prediction.ok:
        return PredictedLocation.failed(image_id, prediction.failure_reason or "no coordinate", line)
    levels = prediction.levels.model_dump(exclude={"calibration"}) if prediction.levels else None
    return PredictedLocation(
        image_id, prediction.lat, prediction.lon, None, _ranked_from_prediction(prediction), line,
        tuple(prediction.missing_stages), levels,
    )


def read_geosleuth_jsonl(path: str | os.PathLike[str]) -> PredictionFile:
    """Read geosleuth batch output (line forms: module docstring). Duplicate ids are an error."""
    source = Path(path)
    notes: list[str] = []
    out: list[PredictedLocation] = []
    seen: dict[str, int] = {}
    try:
        handle = source.open(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataFileError(f"{source}: predictions file does not exist; check the path") from None
    except OSError as exc:
        raise DataFileError(f"{source}: cannot open predictions file ({exc})") from None
    with handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{source}, line {line_no}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataFileError(
                    f"{where}: not valid JSON ({exc.msg}); a truncated last line means the run was "
                    "interrupted: delete that line and re-run the missing image"
                ) from None
            if not isinstance(row, dict) or "id" not in row:
                raise DataFileError(f"{where}: expected a JSON object with an \"id\" key")
            image_id = str(row["id"]).strip()
            if not image_id:
                raise DataFileError(f"{where}: empty \"id\"")
            if image_id in seen:
                raise DataFileError(
                    f"{where}: id {image_id!r} already appears on line {seen[image_id]}; "
                    "keep one result per image"
                )
            seen[image_id] = line_no
            if "error" in row and "prediction" not in row:
                out.append(PredictedLocation.failed(image_id, str(row["error"] or "error"), line_no))
                continue
            body = row["prediction"] if "prediction" in row else {k: v for k, v in row.items() if k != "id"}
            if body is None:
                reason = str(row.get("error") or "no prediction")
                out.append(PredictedLocation.failed(image_id, reason, line_no))
                continue
            try:
                prediction = Prediction.model_validate(body)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'prediction'}: {e['msg']}"
                    for e in exc.errors()[:3]
                )
                raise DataFileError(f"{where}: not a valid geosleuth Prediction ({problems})") from None
            out.append(from_prediction(image_id, prediction, line_no))
    if not out:
        raise DataFileError(f"{source}: no predictions in the file")
    return PredictionFile(source, "geosleuth-jsonl", out, None, notes)


def read_published_csv(
    path: str | os.PathLike[str], *, zero_is_failure: bool = False
) -> PredictionFile:
    """Read another system's per-image CSV, which carries its own ground truth.

    ``zero_is_failure``: several public codebases write (0, 0) for an unparseable answer; with
    True such rows count as failures. Either way a warning says how many (0, 0) predictions exist.
    """
    source = Path(path)
    fieldnames, rows = _read_csv_rows(source)
    columns = {key: _find_column(fieldnames, aliases) for key, aliases in _PUBLISHED_ALIASES.items()}
    absent = [key for key, col in columns.items() if col is None]
    if absent:
        raise DataFileError(
            f"{source}: cannot find column(s) for {', '.join(absent)} (found: {', '.join(fieldnames)}); "
            "a published per-image CSV needs an image id, ground-truth lat/lon and predicted lat/lon "
            "(e.g. img_id, gt_lat, gt_long, predicted_lat, predicted_long)"
        )
    notes: list[str] = []
    skipped: list[str] = []
    truths_raw: list[tuple[str, float, float, int]] = []
    preds: list[PredictedLocation] = []
    seen: dict[str, int] = {}
    zeros = 0
    for line, row in rows:
        image_id = (row.get(columns["id"] or "") or "").strip()
        gt_lat = _parse_float(row.get(columns["gt_lat"] or ""))
        gt_lon = _parse_float(row.get(columns["gt_lon"] or ""))
        if not image_id or image_id.lower() in _SUMMARY_IDS or gt_lat is None or gt_lon is None:
            skipped.append(f"line {line} ({image_id or 'no id'!r})")
            continue
        if image_id in seen:
            raise DataFileError(
                f"{source}, line {line}: image id {image_id!r} already appears on line {seen[image_id]}"
            )
        seen[image_id] = line
        truths_raw.append((image_id, gt_lat, gt_lon, line))
        p_lat = _parse_float(row.get(columns["pred_lat"] or ""))
        p_lon = _parse_float(row.get(columns["pred_lon"] or ""))
        if p_lat is None or p_lon is None:
            preds.append(PredictedLocation.failed(image_id, "no parseable predicted coordinate", line))
            continue
        if abs(p_lat) > 90.0 or abs(p_lon) > 360.0:
            reason = f"predicted ({p_lat}, {p_lon}) is out of range"
            preds.append(PredictedLocation.failed(image_id, reason, line))
            continue
        if p_lat == 0.0 and p_lon == 0.0:
            zeros += 1
            if zero_is_failure:
                preds.append(PredictedLocation.failed(image_id, "predicted (0, 0), taken as a failure", line))
                continue
        p_lon = wrap_lon(p_lon)
        preds.append(PredictedLocation(image_id, p_lat, p_lon, None, ((p_lat, p_lon),), line))
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        _warn(
            notes,
            f"{source}: skipped {len(skipped)} non-data row(s) (a summary row or no ground truth): {shown}",
        )
    if not truths_raw:
        raise DataFileError(f"{source}: no data rows with a numeric ground-truth coordinate")
    if zeros:
        action = (
            "counted as failures"
            if zero_is_failure
            else "scored as given (use --zero-as-failure to count them as failures)"
        )
        _warn(
            notes,
            f"{source}: {zeros} prediction(s) are exactly (0, 0), which several public codebases write "
            f"for an unparseable answer; {action}",
        )
    lats = [t[1] for t in truths_raw]
    lons = [t[2] for t in truths_raw]
    swapped, note = detect_swapped_lat_lon(lats, lons, source=f"{source} (ground-truth columns)")
    if swapped and note:
        # Only a definite swap is worth a warning here; "cannot tell" is the normal case for subsets.
        _warn(notes, note)
        lats, lons = lons, lats
    truths: list[GroundTruth] = []
    for (image_id, _, _, line), lat, lon in zip(truths_raw, lats, lons, strict=True):
        if abs(lat) > 90.0 or abs(lon) > 360.0:
            raise DataFileError(
                f"{source}, line {line}: ground truth ({lat}, {lon}) is not a valid coordinate; fix this row"
            )
        truths.append(GroundTruth(image_id, lat, wrap_lon(lon)))
    return PredictionFile(source, "published-csv", preds, truths, notes)


def read_predictions_table(path: str | os.PathLike[str]) -> PredictionFile:
    """Read a predictions CSV without its own truth: ``geosleuth export --format csv`` or a plain
    ``id,lat,lon`` table. A row without a coordinate is a failure (its reason from failure_reason /
    error / status); ``status`` "degraded" keeps ``missing_stages``."""
    source = Path(path)
    fieldnames, rows = _read_csv_rows(source)
    columns = {key: _find_column(fieldnames, aliases) for key, aliases in _TABLE_ALIASES.items()}
    absent = [key for key, col in columns.items() if col is None]
    if absent:
        wanted = {"id": "an image id", "lat": "a latitude", "lon": "a longitude"}
        raise DataFileError(
            f"{source}: no column for {' or '.join(wanted[k] for k in absent)} (found: {', '.join(fieldnames)}); "
            "a predictions table needs id, lat and lon columns (as `geosleuth export --format csv` writes)"
        )
    reasons = [c for c in (_find_column(fieldnames, (name,)) for name in _TABLE_REASON_COLUMNS) if c]
    status_col = _find_column(fieldnames, ("status",))
    stages_col = _find_column(fieldnames, ("missing_stages",))
    out: list[PredictedLocation] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        image_id = (row.get(columns["id"] or "") or "").strip()
        if not image_id:
            raise DataFileError(f"{source}, line {line}: empty {columns['id']!r}; every row needs an image id")
        if image_id in seen:
            raise DataFileError(
                f"{source}, line {line}: image id {image_id!r} already appears on line {seen[image_id]}"
            )
        seen[image_id] = line
        lat = _parse_float(row.get(columns["lat"] or ""))
        lon = _parse_float(row.get(columns["lon"] or ""))
        if lat is None or lon is None or abs(lat) > 90.0 or abs(lon) > 360.0:
            reason = next((row[c].strip() for c in reasons if (row.get(c) or "").strip()), "")
            out.append(PredictedLocation.failed(image_id, reason or "no parseable predicted coordinate", line))
            continue
        degraded = status_col is not None and (row.get(status_col) or "").strip().lower() == "degraded"
        stages = tuple(s for s in (row.get(stages_col or "") or "").split(";") if s.strip()) if degraded else ()
        lon = wrap_lon(lon)
        out.append(PredictedLocation(image_id, lat, lon, None, ((lat, lon),), line,
                                     stages or (("unknown",) if degraded else ())))
    if not out:
        raise DataFileError(f"{source}: no predictions in the file")
    return PredictionFile(source, "table-csv", out, None, [])


def _is_published_csv(source: Path) -> bool:
    """A CSV with predicted *and* ground-truth columns (a published per-image result file)."""
    fieldnames, _ = _read_csv_rows(source)
    return all(_find_column(fieldnames, _PUBLISHED_ALIASES[key]) for key in ("pred_lat", "pred_lon")) and all(
        _find_column(fieldnames, _PUBLISHED_ALIASES[key]) for key in ("gt_lat", "gt_lon")
    )


def read_predictions(
    path: str | os.PathLike[str],
    *,
    format: PredictionFormat | Literal["auto"] = "auto",
    zero_is_failure: bool = False,
) -> PredictionFile:
    """Read a predictions file. ``auto``: a .csv with predicted and ground-truth columns is a published
    result file, any other .csv a predictions table (our CSV export, or id,lat,lon), else JSONL."""
    source = Path(path)
    if format == "auto":
        if source.suffix.lower() in (".csv", ".tsv"):
            format = "published-csv" if _is_published_csv(source) else "table-csv"
        else:
            format = "geosleuth-jsonl"
    if format == "published-csv":
        return read_published_csv(source, zero_is_failure=zero_is_failure)
    if format == "table-csv":
        return read_predictions_table(source)
    return read_geosleuth_jsonl(source)


@dataclass
class Matched:
    """Predictions lined up with the ground truth: ``predictions[i]`` answers ``truths[i]``."""

    truths: list[GroundTruth]
    predictions: list[PredictedLocation]
    unmatched_ids: list[str]  # predictions for images that are not in the ground truth
    missing: int  # truth images with no prediction at all (scored as failures)


def _name_and_stem(image_id: str) -> tuple[str, str]:
    name = Path(image_id.replace("\\", "/")).name
    return name, Path(name).stem


def match_to_truth(truths: Sequence[GroundTruth], predictions: Sequence[PredictedLocation]) -> Matched:
    """Pair each truth with its prediction by id: exact, else same file name, else same file stem
    (run outputs may use paths where the metadata has bare names); a name or stem shared by several
    truths never matches.

    A truth without a prediction gets a failure (:data:`NO_PREDICTION`): it stays in the
    denominator. Predictions for unknown ids are returned in ``unmatched_ids``, not scored.
    """
    exact: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    by_stem: dict[str, list[int]] = {}
    for i, truth in enumerate(truths):
        if truth.id in exact:
            raise DataFileError(f"ground truth lists image id {truth.id!r} twice; remove the duplicate")
        exact[truth.id] = i
        name, stem = _name_and_stem(truth.id)
        by_name.setdefault(name, []).append(i)
        by_stem.setdefault(stem, []).append(i)

    def find(image_id: str) -> int | None:
        if image_id in exact:
            return exact[image_id]
        name, stem = _name_and_stem(image_id)
        for table, key in ((by_name, name), (by_stem, stem)):
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
        return None

    by_truth: dict[int, PredictedLocation] = {}
    unmatched: list[str] = []
    for pred in predictions:
        hit = find(pred.id)
        if hit is None or hit in by_truth:
            unmatched.append(pred.id)
            continue
        by_truth[hit] = pred
    aligned = [
        by_truth.get(i) or PredictedLocation.failed(truth.id, NO_PREDICTION) for i, truth in enumerate(truths)
    ]
    return Matched(list(truths), aligned, unmatched, len(truths) - len(by_truth))
