"""Prediction readers: geosleuth JSONL (with error lines), published CSVs (with a summary row), matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geosleuth.errors import DataFileError
from geosleuth.eval.datasets import DatasetWarning, GroundTruth
from geosleuth.eval.predictions import (
    NO_PREDICTION,
    PredictedLocation,
    match_to_truth,
    read_geosleuth_jsonl,
    read_predictions,
    read_published_csv,
)
from geosleuth.types import Candidate, CandidateSource, ImageRef, Prediction


def _prediction(lat: float | None, lon: float | None, **extra: object) -> Prediction:
    return Prediction(image=ImageRef(path="x.jpg"), lat=lat, lon=lon, **extra)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_geosleuth_jsonl_with_error_lines_and_failed_predictions(tmp_path: Path) -> None:
    alternatives = [
        Candidate(lat=48.85, lon=2.35, source=CandidateSource.VLM),  # the winner repeated
        Candidate(lat=45.76, lon=4.84, source=CandidateSource.RETRIEVAL),
    ]
    ok = _prediction(48.85, 2.35, alternatives=alternatives)
    failed = _prediction(None, None, failure_reason="no parseable VLM answer")
    flat = {"id": "d", **_prediction(1.0, 2.0).model_dump(mode="json")}
    path = _jsonl(
        tmp_path / "preds.jsonl",
        [
            {"id": "a", "prediction": ok.model_dump(mode="json")},
            {"id": "b", "error": "cannot load image 'b.jpg': truncated file"},
            {"id": "c", "prediction": failed.model_dump(mode="json")},
            flat,
        ],
    )
    result = read_geosleuth_jsonl(path)
    assert result.format == "geosleuth-jsonl" and result.truths is None
    by_id = {p.id: p for p in result.predictions}
    assert by_id["a"].ok and (by_id["a"].lat, by_id["a"].lon) == (48.85, 2.35)
    assert by_id["a"].ranked == ((48.85, 2.35), (45.76, 4.84))  # duplicate winner dropped
    assert not by_id["b"].ok and "truncated" in (by_id["b"].failure or "")
    assert by_id["b"].lat is None and by_id["b"].lon is None
    assert not by_id["c"].ok and by_id["c"].failure == "no parseable VLM answer"
    assert by_id["d"].ok and by_id["d"].line == 4
    assert result.has_rankings


def test_geosleuth_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "error": "x"}\n{"id": "b", "predic', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"p\.jsonl, line 2: not valid JSON"):
        read_geosleuth_jsonl(path)
    _jsonl(path, [{"id": "a", "error": "x"}, {"id": "a", "error": "y"}])
    with pytest.raises(DataFileError, match="line 2: id 'a' already appears on line 1"):
        read_geosleuth_jsonl(path)
    _jsonl(path, [{"id": "a", "prediction": {"image": {"path": "a"}, "lat": 95, "lon": 0}}])
    with pytest.raises(DataFileError, match=r"line 1: not a valid geosleuth Prediction"):
        read_geosleuth_jsonl(path)


PUBLISHED = """img_id,gt_lat,predicted_lat,gt_long,predicted_long
a.jpg,48.8566,48.80,2.3522,2.30
b.jpg,-33.8688,,151.2093,
c.jpg,40.7128,0.0,-74.0060,0.0
accuracy,0.171,0.4514,0.5787,0.7291
"""


def test_published_csv_skips_summary_row_and_keeps_failures(tmp_path: Path) -> None:
    path = tmp_path / "g3_results.csv"
    path.write_text(PUBLISHED, encoding="utf-8")
    with pytest.warns(DatasetWarning) as record:
        result = read_published_csv(path)
    messages = [str(w.message) for w in record]
    assert any("skipped 1 non-data row" in m and "accuracy" in m for m in messages)
    assert any("exactly (0, 0)" in m for m in messages)
    assert result.format == "published-csv"
    assert [t.id for t in result.truths or []] == ["a.jpg", "b.jpg", "c.jpg"]
    assert (result.truths or [])[1].lon == 151.2093
    preds = {p.id: p for p in result.predictions}
    assert preds["a.jpg"].ok and preds["a.jpg"].lat == 48.80
    assert not preds["b.jpg"].ok  # empty prediction: a failure, not (0, 0)
    assert preds["c.jpg"].ok and (preds["c.jpg"].lat, preds["c.jpg"].lon) == (0.0, 0.0)  # scored as given


def test_published_csv_zero_as_failure(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(PUBLISHED, encoding="utf-8")
    with pytest.warns(DatasetWarning) as record:
        result = read_predictions(path, zero_is_failure=True)
    assert any("counted as failures" in str(w.message) for w in record)
    assert [p.ok for p in result.predictions] == [True, False, False]


def test_published_csv_needs_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("img_id,lat,lon\na,1,2\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="pred_lat"):
        read_published_csv(path)


def test_match_to_truth_fills_missing_and_matches_by_file_name() -> None:
    truths = [GroundTruth("1_a.jpg", 0, 0), GroundTruth("2_b.jpg", 1, 1), GroundTruth("3_c.jpg", 2, 2)]
    preds = [
        PredictedLocation("images/1_a.jpg", 0, 0, ranked=((0, 0),)),  # path vs name
        PredictedLocation("2_b", 1, 1, ranked=((1, 1),)),  # stem vs name
        PredictedLocation("zzz.jpg", 5, 5, ranked=((5, 5),)),
    ]
    matched = match_to_truth(truths, preds)
    assert [p.ok for p in matched.predictions] == [True, True, False]
    assert matched.predictions[2].failure == NO_PREDICTION
    assert matched.unmatched_ids == ["zzz.jpg"]
    assert matched.missing == 1


def test_match_never_guesses_between_images_sharing_a_stem() -> None:
    truths = [GroundTruth("x.jpg", 0, 0), GroundTruth("x.png", 1, 1)]
    matched = match_to_truth(truths, [PredictedLocation("x", 0, 0, ranked=((0, 0),))])
    assert not any(p.ok for p in matched.predictions)
    assert matched.unmatched_ids == ["x"]


def test_predicted_location_refuses_silent_failures() -> None:
    with pytest.raises(ValueError, match="failure reason is required"):
        PredictedLocation("a", None, None)
    with pytest.raises(ValueError, match="both"):
        PredictedLocation("a", 1.0, None, ranked=())
    assert PredictedLocation("a", 1.0, 2.0).ranked == ((1.0, 2.0),)
