"""Calibration: ECE, the monotone maps, fitting on recorded evidence, and `geosleuth eval calibrate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geosleuth.agent.confidence import Calibration, LevelMap, load_calibration
from geosleuth.agent.decide import decide
from geosleuth.agent.verify import verify
from geosleuth.cli import app
from geosleuth.config import VerifyConfig
from geosleuth.errors import ConfigError
from geosleuth.eval.calibration import CalibrationExample, calibrate, ece, fit_isotonic, fit_platt, outcomes
from geosleuth.geo import ReverseGeocoder
from geosleuth.types import LEVELS, GPSCandidate, ImageRef, Prediction, RetrievalResult

runner = CliRunner()


@pytest.fixture(scope="module")
def geocoder() -> ReverseGeocoder:
    return ReverseGeocoder()


def test_ece_is_zero_when_stated_rates_come_true_and_large_when_overconfident() -> None:
    conf = np.repeat([0.2, 0.8], 100)
    right = np.concatenate([np.arange(100) < 20, np.arange(100) < 80])
    assert ece(conf, right) == pytest.approx(0.0)
    assert ece(np.full(200, 0.95), right) == pytest.approx(0.45)


def test_isotonic_map_is_monotone_and_fits_the_rates() -> None:
    rng = np.random.default_rng(0)
    raw = rng.random(4000)
    right = rng.random(4000) < raw**2  # overconfident raw scores
    level_map = fit_isotonic(raw, right)
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(level_map.apply(grid)) >= 0)
    assert level_map.apply(0.5) == pytest.approx(0.25, abs=0.06)
    assert ece(level_map.apply(raw), right) < ece(raw, right) / 3
    platt = fit_platt(raw, right)
    assert np.all(np.diff(platt.apply(grid)) >= 0) and ece(platt.apply(raw), right) < ece(raw, right)


def test_a_broken_calibration_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"format": "geosleuth-calibration", "version": 99}), encoding="utf-8")
    with pytest.raises(ConfigError, match="cal.json.*version 99 is not supported"):
        load_calibration(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_calibration(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="non-decreasing"):
        LevelMap(method="isotonic", x=[0, 1], y=[0.9, 0.1])


def scene(rng: np.random.Generator) -> tuple[RetrievalResult, tuple[float, float]]:
    """GPS candidates: a tight group (right place with probability 0.6) plus scattered decoys."""
    truth = (float(rng.uniform(-40, 60)), float(rng.uniform(-120, 140)))
    right = rng.random() < 0.6
    centre = truth if right else (float(rng.uniform(-40, 60)), float(rng.uniform(-120, 140)))
    size = int(rng.integers(1, 6))
    group = [(centre[0] + float(rng.normal(0, 0.05)), centre[1] + float(rng.normal(0, 0.05))) for _ in range(size)]
    decoys = [(float(rng.uniform(-40, 60)), float(rng.uniform(-120, 140))) for _ in range(4)]
    sims = [0.5] * size + [0.5 - float(rng.uniform(0, 0.05)) for _ in decoys]
    return RetrievalResult(gps_candidates=[GPSCandidate(lat=a, lon=b, similarity=s)
                                           for (a, b), s in zip(group + decoys, sims, strict=True)]), truth


def predictions(count: int, geocoder: ReverseGeocoder, seed: int = 1) -> list[tuple[Prediction, tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        retrieval, truth = scene(rng)
        checked = verify(retrieval, [], geoclip_embedding=None, location_encoder=None, geocoder=geocoder,
                         config=VerifyConfig(), calibration=Calibration())
        out.append((decide(checked, image=ImageRef(path="x.jpg"), hypotheses=[], geocoder=geocoder,
                           config=VerifyConfig(), top_k=3, sources_used=[]), truth))
    return out


def test_fitting_on_recorded_evidence_calibrates_held_out_images(geocoder: ReverseGeocoder) -> None:
    data = predictions(400, geocoder)
    examples = [CalibrationExample(p.evidence, *truth) for p, truth in data]
    fitted = calibrate(examples[:250], geocoder, source="test scenes", calibration_id="t")
    held = outcomes(examples[250:], fitted.fusion, geocoder)
    before = outcomes(examples[250:], Calibration().fusion, geocoder)
    for level in ("within_25km", "within_200km"):
        calibrated = fitted.levels[level].apply(held.raw[level])
        assert abs(np.mean(calibrated) - np.mean(held.right[level])) < 0.08, level
        assert ece(calibrated, held.right[level]) < ece(before.raw[level], before.right[level]), level
    assert set(fitted.fit_report) >= {f"ece_{level}" for level in LEVELS}


def test_eval_calibrate_writes_a_file_verify_can_use(tmp_path: Path, geocoder: ReverseGeocoder) -> None:
    data = predictions(60, geocoder, seed=2)
    truth_file = tmp_path / "truth.csv"
    truth_file.write_text("id,lat,lon\n" + "".join(f"img{i}.jpg,{t[0]},{t[1]}\n" for i, (_, t) in enumerate(data)),
                          encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"dataset": "generic", "truth_file": str(truth_file)}),
                                       encoding="utf-8")
    lines = [json.dumps({"id": f"img{i}.jpg", "prediction": p.model_dump(mode="json")})
             for i, (p, _) in enumerate(data)]
    lines.append(json.dumps({"id": "broken.jpg", "error": "image could not be read", "error_type": "ImageLoadError"}))
    (run / "predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "cal" / "calibration.json"

    result = runner.invoke(app, ["eval", "calibrate", str(run), "--out", str(out), "--id", "mine"])
    assert result.exit_code == 0, result.output
    assert "ECE per level" in result.output and "within_25km" in result.output
    calibration = load_calibration(out)
    assert calibration.id == "mine" and calibration.fit_report["images"] == 60
    assert calibration.label.startswith("mine@") and len(calibration.sha256) == 64

    retrieval, _ = scene(np.random.default_rng(5))
    checked = verify(retrieval, [], geoclip_embedding=None, location_encoder=None, geocoder=geocoder,
                     config=VerifyConfig(calibration=out), calibration=calibration)
    assert checked.evidence is not None and checked.evidence.calibration == calibration.label


def test_eval_calibrate_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "calibrate", str(tmp_path), "--out", str(tmp_path / "c.json")])
    assert result.exit_code != 0
    assert "manifest" in " ".join(result.output.split())


def test_refitting_starts_from_exactly_what_the_fusion_computed(geocoder: ReverseGeocoder) -> None:
    from geosleuth.agent.fusion import rescore

    for prediction, _ in predictions(5, geocoder, seed=3):
        evidence = prediction.evidence
        assert evidence is not None
        params = Calibration().fusion.sources
        log_mass, elsewhere, posterior = rescore(evidence, {s: p.weight for s, p in params.items()},
                                                 {s: p.miss for s, p in params.items()})
        assert log_mass == pytest.approx([c.log_mass for c in evidence.clusters])
        assert elsewhere == pytest.approx(evidence.elsewhere_log_mass)
        assert posterior[:-1] == pytest.approx([c.posterior for c in evidence.clusters])
