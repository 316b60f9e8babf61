"""Reports and comparison tables beside published results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from rich.console import Console

from geosleuth.errors import DataFileError
from geosleuth.eval.anchors import PUBLISHED_RESULTS, anchors_for
from geosleuth.eval.datasets import GroundTruth
from geosleuth.eval.metrics import evaluate
from geosleuth.eval.predictions import PredictedLocation
from geosleuth.eval.report import compare_markdown, compare_table, load_run, write_report


@pytest.fixture()
def scored() -> tuple[list[GroundTruth], list[PredictedLocation]]:
    truths = [GroundTruth("a", 48.85, 2.35), GroundTruth("b", 0.0, 179.9), GroundTruth("c", -33.9, 151.2)]
    preds = [
        PredictedLocation("a", 48.86, 2.34, ranked=((48.86, 2.34), (45.0, 4.0))),
        PredictedLocation("b", 0.0, -179.9, ranked=((0.0, -179.9),)),
        PredictedLocation.failed("c", "VLM timeout"),
    ]
    return truths, preds


def test_anchor_table_matches_platform_numbers() -> None:
    assert {r.system for r in anchors_for("IM2GPS3K")} == {
        "GeoCLIP", "Img2Loc (GPT-4V)", "G3 (GPT-4V)", "G3 (LLaVA-Next-8B)", "GeoRanker",
    }
    assert "G3 (LLaVA-Next-8B)" not in {r.system for r in anchors_for("yfcc4k")}
    georanker = next(r for r in anchors_for("yfcc4k") if r.system == "GeoRanker")
    assert georanker.acc_percent == (32.94, 43.54, 54.32, 69.79, 82.45)
    assert georanker.acc_fraction(25) == pytest.approx(0.4354)
    for result in PUBLISHED_RESULTS:  # accuracy can only grow with the radius
        assert list(result.acc_percent) == sorted(result.acc_percent)


def test_write_report_files(tmp_path: Path, scored: tuple[list[GroundTruth], list[PredictedLocation]]) -> None:
    truths, preds = scored
    metrics = evaluate(truths, preds, resamples=50, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"dataset": "im2gps3k"}), encoding="utf-8")
    files = write_report(run, metrics, truths, preds)

    assert json.loads(files.metrics_json.read_text()) == metrics.model_dump(mode="json")
    with files.per_image_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert float(rows[1]["distance_km"]) == pytest.approx(22.26, abs=0.01)
    assert rows[2]["pred_lat"] == "" and rows[2]["failure"] == "VLM timeout"

    text = files.report_md.read_text()
    assert "Failures: 1" in text
    assert "GeoRanker (published)" in text  # dataset taken from manifest.json
    assert "Recall vs area" in text
    for plot in files.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in files.plots} == {"error_cdf.png", "world_map.png"}

    metrics_back, manifest = load_run(run)
    assert metrics_back == metrics and manifest["dataset"] == "im2gps3k"


def test_report_says_how_places_are_derived_and_zooms_its_map(tmp_path: Path) -> None:
    from geosleuth.eval.report import world_map_bbox
    from geosleuth.geo import ReverseGeocoder

    geocoder = ReverseGeocoder()
    truths = [GroundTruth("a", 48.85, 2.35), GroundTruth("b", 45.76, 4.84)]
    preds = [PredictedLocation("a", 48.0, 2.0, ranked=((48.0, 2.0),)), PredictedLocation("b", 43.6, 1.4,
                                                                                            ranked=((43.6, 1.4),))]
    metrics = evaluate(truths, preds, geocoder=geocoder, resamples=0)
    files = write_report(tmp_path, metrics, truths, preds, boundaries=geocoder.boundaries)
    text = files.report_md.read_text()
    assert "reverse-geocoded by the same geocoder" in text and "Natural Earth 1:10m" in text
    x0, y0, x1, y1 = world_map_bbox(truths, preds)
    assert x0 <= 1.4 and x1 >= 4.84 and y0 <= 43.6 and y1 >= 48.85
    assert x1 - x0 < 30 and y1 - y0 < 20  # France, not the world
    without = write_report(tmp_path / "no-places", evaluate(truths, preds, resamples=0), truths, preds,
                           boundaries=geocoder.boundaries)
    assert "reverse-geocoded" not in without.report_md.read_text()


def test_compare_table_puts_runs_beside_anchors(scored: tuple[list[GroundTruth], list[PredictedLocation]]) -> None:
    truths, preds = scored
    metrics = evaluate(truths, preds, resamples=0).model_dump(mode="json")
    md = compare_markdown({"ours": metrics}, "yfcc4k")
    lines = md.splitlines()
    assert lines[0].startswith("| system | n | failures | 1 km (%)")
    assert lines[2].startswith("| ours | 3 | 1 | 0.00 | 66.67 | 66.67 |")
    assert "| GeoRanker (published) | — | — | 32.94 | 43.54 | 54.32 | 69.79 | 82.45 |" in lines
    assert "G3 (LLaVA-Next-8B)" not in md

    console = Console(width=100, record=True)
    console.print(compare_table({"ours": metrics}, "im2gps3k"))
    out = console.export_text()
    assert "66.67" in out and "18.79" in out and "G3 (LLaVA-Next-8B)" in out


def test_load_run_requires_dataset(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataFileError, match="manifest.json: missing"):
        load_run(tmp_path)
    (tmp_path / "manifest.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataFileError, match='no "dataset" key'):
        load_run(tmp_path)
