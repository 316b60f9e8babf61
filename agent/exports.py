"""Export a batch results file (JSONL) as JSONL, CSV, GeoJSON or KML.

GeoJSON and KML hold points, so images without a coordinate (errors, failed predictions) are left
out of them and counted in the :class:`ExportReport`; CSV and JSONL keep every image, failures
included, with their reason. Every format carries each image's ``status`` (ok / degraded / failed /
error) and the stages a degraded answer was missing. Every export is written atomically
(:mod:`geosleuth.fileio`), so a failed export never leaves half a file behind.
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from geosleuth.errors import DataFileError
from geosleuth.fileio import atomic_writer
from geosleuth.types import LEVELS

from .batch import ResultRecord, read_results

ExportFormat = Literal["jsonl", "csv", "geojson", "kml"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
EXPORT_SUFFIXES: dict[str, str] = {"jsonl": ".jsonl", "csv": ".csv", "geojson": ".geojson", "kml": ".kml"}
KML_NAMESPACE = "http://www.opengis.net/kml/2.2"
# Calibrated per-level probabilities (geosleuth.types.LevelConfidence), one column each.
LEVEL_COLUMNS = tuple(f"p_{level}" for level in LEVELS)

CSV_COLUMNS = (
    "id", "path", "status", "lat", "lon", "confidence", "place", "continent", "country", "country_code",
    "admin1", "admin2", "city", "alternatives", "sources_used", "missing_stages", "failure_reason", "error",
    "error_type", "trace_id", *LEVEL_COLUMNS,
)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    written: int  # images in the export
    without_coordinate: int  # images left out (GeoJSON/KML) or exported as failures (CSV/JSONL)
    degraded: int = 0  # images whose answer lacks a required stage (status "degraded")


def _failure(record: ResultRecord) -> str | None:
    if record.prediction is None:
        return record.error
    return record.prediction.failure_reason


def _properties(record: ResultRecord) -> dict[str, Any]:
    """What a map feature says about its image (only for records with a coordinate)."""
    prediction = record.prediction
    assert prediction is not None
    place = prediction.place
    return {
        "id": record.id,
        "path": record.path,
        "status": record.status,
        "missing_stages": ";".join(prediction.missing_stages),
        "confidence": prediction.confidence,
        "place": place.hierarchy() if place else None,
        "country": place.country if place else None,
        "country_code": place.country_code if place else None,
        "city": place.city if place else None,
        "alternatives": len(prediction.alternatives),
        "trace_id": prediction.trace_id,
        **(prediction.levels.columns() if prediction.levels else {}),
    }


def _rows(records: Sequence[ResultRecord]) -> Iterator[dict[str, Any]]:
    for record in records:
        prediction = record.prediction
        place = prediction.place if prediction else None
        yield {
            "id": record.id,
            "path": record.path,
            "status": record.status,
            "missing_stages": ";".join(prediction.missing_stages) if prediction else None,
            "lat": prediction.lat if prediction else None,
            "lon": prediction.lon if prediction else None,
            "confidence": prediction.confidence if prediction else None,
            "place": place.hierarchy() if place else None,
            "continent": place.continent if place else None,
            "country": place.country if place else None,
            "country_code": place.country_code if place else None,
            "admin1": place.admin1 if place else None,
            "admin2": place.admin2 if place else None,
            "city": place.city if place else None,
            "alternatives": len(prediction.alternatives) if prediction else 0,
            "sources_used": ";".join(prediction.sources_used) if prediction else None,
            "failure_reason": prediction.failure_reason if prediction else None,
            "error": record.error,
            "error_type": record.error_type,
            "trace_id": prediction.trace_id if prediction else None,
            **(prediction.levels.columns() if prediction and prediction.levels else dict.fromkeys(LEVEL_COLUMNS)),
        }


def write_jsonl(records: Sequence[ResultRecord], out: Path) -> int:
    """The complete records again, one per line (e.g. to drop a killed run's half-written line)."""
    with atomic_writer(out) as handle:
        for record in records:
            row: dict[str, Any] = {"id": record.id, "path": record.path}
            if record.prediction is not None:
                row["prediction"] = record.prediction.model_dump(mode="json")
            else:
                row["error"] = record.error
                row["error_type"] = record.error_type
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    return len(records)


def write_csv(records: Sequence[ResultRecord], out: Path) -> int:
    """One row per image with a header (:data:`CSV_COLUMNS`); empty cells where nothing is known."""
    with atomic_writer(out, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in _rows(records):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return len(records)


def to_geojson(records: Sequence[ResultRecord]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection: one Point ([lon, lat], RFC 7946 order) per located image."""
    features = []
    for record in records:
        if not record.ok:
            continue
        prediction = record.prediction
        assert prediction is not None and prediction.lat is not None and prediction.lon is not None
        features.append(
            {
                "type": "Feature",
                "id": record.id,
                "geometry": {"type": "Point", "coordinates": [prediction.lon, prediction.lat]},
                "properties": _properties(record),
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(records: Sequence[ResultRecord], out: Path) -> int:
    collection = to_geojson(records)
    with atomic_writer(out) as handle:
        json.dump(collection, handle, ensure_ascii=False, indent=1)
        handle.write("\n")
    return len(collection["features"])


def to_kml(records: Sequence[ResultRecord], *, name: str = "geosleuth results") -> ET.ElementTree:
    """A KML 2.2 document with one Placemark per located image (text is escaped by ElementTree)."""
    ET.register_namespace("", KML_NAMESPACE)

    def sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        element = ET.SubElement(parent, f"{{{KML_NAMESPACE}}}{tag}")
        if text is not None:
            element.text = text
        return element

    root = ET.Element(f"{{{KML_NAMESPACE}}}kml")
    document = sub(root, "Document")
    sub(document, "name", name)
    for record in records:
        if not record.ok:
            continue
        prediction = record.prediction
        assert prediction is not None and prediction.lat is not None and prediction.lon is not None
        mark = sub(document, "Placemark")
        sub(mark, "name", record.id)
        props = _properties(record)
        conf = f"{prediction.confidence:.2f}" if prediction.confidence is not None else "unknown"
        degraded = f"; degraded: no {props['missing_stages']}" if prediction.degraded else ""
        sub(mark, "description", f"{props['place'] or 'unknown place'} (confidence {conf}{degraded})")
        extended = sub(mark, "ExtendedData")
        for key, value in props.items():
            if value is None:
                continue
            data = sub(extended, "Data")
            data.set("name", key)
            sub(data, "value", str(value))
        point = sub(mark, "Point")
        sub(point, "coordinates", f"{prediction.lon!r},{prediction.lat!r},0")
    return ET.ElementTree(root)


def write_kml(records: Sequence[ResultRecord], out: Path) -> int:
    tree = to_kml(records, name=out.stem)
    ET.indent(tree)
    with atomic_writer(out) as handle:
        tree.write(handle, encoding="unicode", xml_declaration=True)
        handle.write("\n")
    return sum(1 for r in records if r.ok)


_WRITERS: dict[str, Callable[[Sequence[ResultRecord], Path], int]] = {
    "jsonl": write_jsonl, "csv": write_csv, "geojson": write_geojson, "kml": write_kml,
}


def default_export_path(results: str | os.PathLike[str], fmt: str) -> Path:
    """``results.jsonl`` -> ``results.geojson`` etc. (JSONL: ``results.export.jsonl``, never itself)."""
    source = Path(results)
    if fmt == "jsonl":
        return source.with_name(f"{source.stem}.export.jsonl")
    return source.with_suffix(EXPORT_SUFFIXES[fmt])


def export_records(records: Sequence[ResultRecord], fmt: str, out: str | os.PathLike[str]) -> ExportReport:
    """Write ``records`` to ``out`` in format ``fmt`` (one of :data:`EXPORT_FORMATS`)."""
    if fmt not in _WRITERS:
        raise DataFileError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    target = Path(out)
    written = _WRITERS[fmt](records, target)
    return ExportReport(
        target, fmt, written, sum(1 for r in records if not r.ok), sum(1 for r in records if r.status == "degraded")
    )


def export_results(
    results: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str] | None = None
) -> ExportReport:
    """Read a batch results file and export it (``out`` defaults to :func:`default_export_path`)."""
    target = Path(out) if out is not None else default_export_path(results, fmt)
    if target.resolve() == Path(results).resolve():
        raise DataFileError(f"{target}: the export would overwrite the results file; choose another --out")
    return export_records(read_results(results), fmt, target)
