"""`geosleuth locate`: a readable answer or JSON Predictions, EXIF GPS beside it, failures shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geosleuth.cli import app
from geosleuth.geo import geodesic_km
from geosleuth.types import Prediction, Trace

runner = CliRunner()


def test_summary_shows_place_coordinate_map_link_exif_alternatives_and_clues(fake_geo, folder: Path):
    result = runner.invoke(app, ["locate", str(folder / "porto.jpg")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Europe > Portugal > Porto" in out
    assert "38.7223°N, 9.1393°W" in out and "confidence 0.64" in out
    assert "https://www.openstreetmap.org/?mlat=38.72230&mlon=-9.13930#map=10/38.72230/-9.13930" in out
    km = float(geodesic_km(38.7223, -9.1393, 41.1496, -8.6110))
    assert f"EXIF GPS 41.1496°N, 8.6110°W   {km:,.1f} km from the prediction" in out
    assert "alternatives" in out and "42.2400°N, 8.7200°W" in out  # the second candidate
    assert "[bold red]not markup[/]" in out  # a clue, shown as text
    assert "reason failed: 1 of 3 VLM replies were unusable" in out
    for step in ("perceive", "retrieve", "reason", "verify", "decide"):  # progress, on stderr
        assert step in result.stderr
    assert fake_geo.closed


def test_json_output_validates_as_one_prediction_per_image(fake_geo, folder: Path):
    result = runner.invoke(app, ["locate", "--json", "--top-k", "1", str(folder / "b.png"), str(folder / "porto.jpg")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    predictions = [Prediction.model_validate_json(line) for line in lines]
    assert [p.image.path for p in predictions] == [str(folder / "b.png"), str(folder / "porto.jpg")]
    assert all(p.ok and len(p.alternatives) == 1 for p in predictions)
    assert predictions[1].image.exif.gps.lat == pytest.approx(41.1496, abs=1e-4)


def test_no_coordinate_shows_the_reason_and_exits_non_zero(fake_geo, folder: Path):
    result = runner.invoke(app, ["locate", str(folder / "nowhere.jpg")])
    assert result.exit_code == 1
    assert "no location: no source proposed a candidate location (test double)" in result.stdout
    assert "openstreetmap" not in result.stdout


def test_a_broken_image_is_a_failed_prediction_and_the_others_still_run(fake_geo, folder: Path):
    result = runner.invoke(app, ["locate", "--json", str(folder / "broken.jpg"), str(folder / "b.png")])
    assert result.exit_code == 1
    broken, good = (Prediction.model_validate_json(line) for line in result.stdout.splitlines())
    assert broken.lat is None and "broken.jpg" in broken.failure_reason
    assert broken.failures[0].step == "perceive"
    assert good.ok


def test_trace_option_writes_a_trace_that_trace_show_reads(fake_geo, folder: Path, tmp_path: Path):
    trace_path = tmp_path / "t.json"
    result = runner.invoke(app, ["locate", str(folder / "porto.jpg"), "--trace", str(trace_path)])
    assert result.exit_code == 0, result.output
    trace = Trace.model_validate_json(trace_path.read_text())
    assert trace.prediction.lat == pytest.approx(38.7223)
    shown = runner.invoke(app, ["trace", "show", str(trace_path)])
    assert shown.exit_code == 0 and "hypotheses (2)" in shown.stdout


def test_missing_file_is_a_usage_error(fake_geo, tmp_path: Path):
    result = runner.invoke(app, ["locate", str(tmp_path / "nope.jpg")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_locate_end_to_end_with_tiny_models(tiny_config: Path, folder: Path):
    """The real Geolocator: tiny CLIP + GeoCLIP heads, 2K GPS gallery, tiny LLaVA (random answers, so
    no usable VLM reply: the answer comes from the GPS gallery alone and says it is degraded)."""
    args = ["--config", str(tiny_config), "locate", "--json", str(folder / "porto.jpg")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 3, refused.output
    assert "--allow-degraded" in refused.stderr
    result = runner.invoke(app, [*args, "--allow-degraded"])
    assert result.exit_code == 0, result.output
    prediction = Prediction.model_validate(json.loads(result.stdout))
    assert prediction.status.value == "degraded" and prediction.missing_stages == ["vlm"]
    # Random weights put it anywhere, but the GPS gallery always proposes real candidates.
    assert prediction.ok and prediction.alternatives and prediction.place is not None
    assert prediction.image.exif.gps.lat == pytest.approx(41.1496, abs=1e-4)
    assert "gps-gallery" in prediction.sources_used
    # Calibrated per-level probabilities in the JSON and in the readable summary.
    assert prediction.levels is not None and prediction.confidence == prediction.levels.within_25km
    summary = runner.invoke(
        app, ["--config", str(tiny_config), "locate", "--allow-degraded", str(folder / "porto.jpg")]
    )
    assert summary.exit_code == 0, summary.output
    flat = " ".join(summary.stdout.split())
    # (a second run: the random VLM may answer differently, so the numbers are checked for form)
    assert re.search(r"confidence [01]\.\d\d \(P within 25 km\)", flat), flat
    assert re.search(r"P country [01]\.\d\d · region [01]\.\d\d · city [01]\.\d\d", flat), flat
