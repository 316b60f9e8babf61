"""Exports of a results file: GeoJSON, KML, CSV and JSONL that other tools can read."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from geosleuth.agent.batch import read_batch_input, run_batch
from geosleuth.agent.exports import KML_NAMESPACE, default_export_path, export_results
from geosleuth.errors import DataFileError


@pytest.fixture
def results(photo_folder: Path, make_locator, tmp_path: Path) -> Path:
    """9 images: 5 located (Lisbon), 1 prediction without a coordinate, 3 broken files."""
    out = tmp_path / "results.jsonl"
    run_batch(read_batch_input(photo_folder).items, make_locator(no_coordinate={"c.jpeg"}), out)
    return out


def test_geojson_is_a_feature_collection_of_lon_lat_points(results: Path):
    report = export_results(results, "geojson")
    assert report.path == results.with_suffix(".geojson")
    data = json.loads(report.path.read_text())
    assert data["type"] == "FeatureCollection"
    assert len(data["features"]) == report.written == 5
    assert report.without_coordinate == 4
    for feature in data["features"]:
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Point"
        lon, lat = feature["geometry"]["coordinates"]
        assert (lat, lon) == pytest.approx((38.7223, -9.1393))  # RFC 7946: [longitude, latitude]
        assert feature["properties"]["country_code"] == "PT"
        assert feature["properties"]["p_country"] == 0.9 and feature["properties"]["p_within_25km"] == 0.42
    located = {"a.jpg", "b.png", "sub/d.jpg", "sub/e.JPG", "z.webp"}
    assert {f["properties"]["id"] for f in data["features"]} == located


def test_kml_parses_as_xml_in_the_kml_namespace(results: Path, tmp_path: Path):
    out = tmp_path / "x.kml"
    export_results(results, "kml", out)
    root = ET.parse(out).getroot()
    ns = {"k": KML_NAMESPACE}
    assert root.tag == f"{{{KML_NAMESPACE}}}kml"
    marks = root.findall("k:Document/k:Placemark", ns)
    assert len(marks) == 5
    names = sorted(m.findtext("k:name", namespaces=ns) for m in marks)
    assert names == ["a.jpg", "b.png", "sub/d.jpg", "sub/e.JPG", "z.webp"]
    lon, lat, _ = marks[0].findtext("k:Point/k:coordinates", namespaces=ns).split(",")
    assert (float(lat), float(lon)) == pytest.approx((38.7223, -9.1393))  # KML: lon,lat[,alt]


def test_kml_escapes_names(tmp_path: Path, make_prediction):
    from geosleuth.agent.batch import BatchItem

    out = tmp_path / "r.jsonl"
    item = BatchItem("<b>&amp; \"odd\" name", "x.jpg")

    async def locate(i):
        return make_prediction(i.path)

    run_batch([item], locate, out)
    kml = export_results(out, "kml").path
    ns = {"k": KML_NAMESPACE}
    assert ET.parse(kml).getroot().findtext("k:Document/k:Placemark/k:name", namespaces=ns) == item.id


def test_csv_has_a_header_and_every_image_with_its_status(results: Path):
    report = export_results(results, "csv")
    with report.path.open(newline="") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert len(rows) == 9
    assert rows["a.jpg"]["status"] == "ok"
    assert float(rows["a.jpg"]["lat"]) == pytest.approx(38.7223)
    assert float(rows["a.jpg"]["lon"]) == pytest.approx(-9.1393)
    assert rows["a.jpg"]["country"] == "Portugal"
    a = rows["a.jpg"]
    assert (a["p_country"], a["p_city"], a["p_within_200km"]) == ("0.9", "0.5", "0.6")
    assert rows["c.jpeg"]["status"] == "failed"
    assert rows["c.jpeg"]["p_country"] == ""  # no answer, no probability
    assert rows["c.jpeg"]["lat"] == "" and rows["c.jpeg"]["failure_reason"]
    assert rows["broken_text.jpg"]["status"] == "error"
    assert rows["broken_text.jpg"]["error_type"] == "ImageLoadError"


def test_jsonl_export_drops_a_half_written_last_line(results: Path, tmp_path: Path):
    with results.open("ab") as handle:
        handle.write(b'{"id": "half')
    out = export_results(results, "jsonl", tmp_path / "clean.jsonl").path
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 9
    assert default_export_path(results, "jsonl") != results


def test_export_refuses_to_overwrite_the_results_or_read_a_missing_file(results: Path, tmp_path: Path):
    before = results.read_bytes()
    with pytest.raises(DataFileError, match="overwrite the results file"):
        export_results(results, "jsonl", results)
    assert results.read_bytes() == before
    with pytest.raises(DataFileError, match="does not exist"):
        export_results(tmp_path / "missing.jsonl", "csv")
