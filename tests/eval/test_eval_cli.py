"""`geosleuth eval score` and `geosleuth eval compare` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geosleuth.cli import app
from geosleuth.types import ImageRef, Prediction

runner = CliRunner()


def _unwrapped(text: str) -> str:
    """Messages as one line: rich wraps stderr at the runner's terminal width."""
    return " ".join(text.split())


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    # Swapped header (the column named LON holds latitudes), as in the widely copied IM2GPS3K file.
    truth = tmp_path / "im2gps3k_places365.csv"
    truth.write_text(
        "IMG_ID,AUTHOR,LAT,LON\n"
        "a.jpg,u1,2.3522,48.8566\n"
        "b.jpg,u2,179.9,0.0\n"
        "c.jpg,u3,151.2093,-33.8688\n"
        "d.jpg,u4,-74.006,40.7128\n",
        encoding="utf-8",
    )
    preds = tmp_path / "preds.jsonl"
    a = Prediction(image=ImageRef(path="a.jpg"), lat=48.86, lon=2.35)
    b = Prediction(image=ImageRef(path="b.jpg"), lat=0.0, lon=-179.9)
    lines = [
        {"id": "a.jpg", "prediction": a.model_dump(mode="json")},
        {"id": "b.jpg", "prediction": b.model_dump(mode="json")},
        {"id": "c.jpg", "error": "VLM returned no JSON"},
        # d.jpg: no line at all
    ]
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    published = tmp_path / "published.csv"
    published.write_text(
        "img_id,gt_lat,predicted_lat,gt_long,predicted_long\n"
        "a.jpg,48.8566,48.86,2.3522,2.35\n"
        "b.jpg,0.0,0.0,179.9,-179.9\n"
        "accuracy,0.5,0.5,0.5,0.5\n",
        encoding="utf-8",
    )
    return {"truth": truth, "preds": preds, "published": published, "dir": tmp_path}


def test_score_json_has_stable_keys_and_counts_failures(files: dict[str, Path]) -> None:
    result = runner.invoke(
        app,
        ["eval", "score", "--predictions", str(files["preds"]), "--truth", str(files["truth"]),
         "--json", "--resamples", "100", "--no-places"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"n", "failures", "acc_km", "mean_km", "median_km", "geoscore", "country", "region", "city"}
    assert data["n"] == 4 and data["failures"] == 2
    assert set(data["acc_km"]) == {"1", "25", "200", "750", "2500"}
    # a.jpg (~1 km) and b.jpg (~22 km across the antimeridian) are within 25 km; c and d are misses.
    assert data["acc_km"]["25"]["value"] == pytest.approx(0.5)
    assert len(data["acc_km"]["25"]["ci"]) == 2
    assert data["mean_km"]["n"] == 2
    assert data["country"] is None  # --no-places
    assert "LAT/LON header is swapped" in _unwrapped(result.stderr)  # announced, not silent


def test_score_table(files: dict[str, Path]) -> None:
    result = runner.invoke(
        app,
        ["eval", "score", "-p", str(files["preds"]), "-t", str(files["truth"]), "--resamples", "50"],
        terminal_width=120,
    )
    assert result.exit_code == 0, result.output
    assert "within 25 km (%)" in result.stdout
    assert "50.00" in result.stdout
    assert "same country (%)" in result.stdout
    assert "VLM returned no JSON" in result.stdout


def test_score_published_csv_without_truth(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["eval", "score", "-p", str(files["published"]), "--json", "--resamples", "0"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 2 and data["failures"] == 0
    assert data["acc_km"]["25"]["value"] == 1.0 and data["acc_km"]["25"]["ci"] is None
    assert "skipped 1 non-data row" in _unwrapped(result.stderr)


def test_score_our_jsonl_needs_truth(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["eval", "score", "-p", str(files["preds"])])
    assert result.exit_code == 2
    assert "pass --truth FILE" in _unwrapped(result.stderr)


def test_score_writes_report_then_compare_reads_it(files: dict[str, Path]) -> None:
    run = files["dir"] / "run1"
    result = runner.invoke(
        app,
        ["eval", "score", "-p", str(files["preds"]), "-t", str(files["truth"]), "--no-places",
         "--resamples", "20", "--report-dir", str(run)],
    )
    assert result.exit_code == 0, result.output
    assert (run / "metrics.json").is_file() and (run / "report.md").is_file()
    (run / "manifest.json").write_text(json.dumps({"dataset": "im2gps3k"}), encoding="utf-8")

    result = runner.invoke(app, ["eval", "compare", str(run), "--markdown"])
    assert result.exit_code == 0, result.output
    assert "### im2gps3k" in result.stdout
    assert "| run1 | 4 | 2 | 25.00" in result.stdout
    assert "| GeoCLIP (published) | — | — | 14.11 |" in result.stdout


def test_compare_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "compare", str(tmp_path)])
    assert result.exit_code == 2
    assert "metrics.json: missing" in _unwrapped(result.stderr)


def _degraded(path: str, lat: float, lon: float) -> Prediction:
    return Prediction(image=ImageRef(path=path), lat=lat, lon=lon, missing_stages=["vlm"])


def test_score_counts_degraded_answers_beside_failures(files: dict[str, Path]) -> None:
    preds = files["dir"] / "degraded.jsonl"
    lines = [
        {"id": "a.jpg", "prediction": _degraded("a.jpg", 48.86, 2.35).model_dump(mode="json")},
        {"id": "b.jpg", "prediction": Prediction(image=ImageRef(path="b.jpg"), lat=0.0, lon=-179.9).model_dump()},
        {"id": "c.jpg", "error": "VLM returned no JSON"},
    ]
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    args = ["eval", "score", "-p", str(preds), "-t", str(files["truth"]), "--resamples", "0", "--no-places"]
    data = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert (data["failures"], data["degraded"], data["degraded_stages"]) == (2, 1, {"vlm": 1})
    table = runner.invoke(app, args)
    assert "failed: 2 of 4; degraded: 1 of 4 (1 without vlm)" in _unwrapped(table.stdout)


def test_score_accepts_our_csv_export_and_a_plain_id_lat_lon_table(files: dict[str, Path]) -> None:
    from geosleuth.agent.exports import export_results

    results = files["dir"] / "results.jsonl"
    lines = [
        {"id": "a.jpg", "path": "a.jpg", "prediction": _degraded("a.jpg", 48.86, 2.35).model_dump(mode="json")},
        {"id": "b.jpg", "path": "b.jpg",
         "prediction": Prediction(image=ImageRef(path="b.jpg"), lat=0.0, lon=-179.9).model_dump(mode="json")},
        {"id": "c.jpg", "path": "c.jpg", "error": "VLM returned no JSON", "error_type": "VLMError"},
    ]
    results.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    exported = export_results(results, "csv").path
    plain = files["dir"] / "plain.csv"
    plain.write_text("id,lat,lon\na.jpg,48.86,2.35\nb.jpg,0.0,-179.9\nc.jpg,,\n", encoding="utf-8")
    scores = {}
    for table in (exported, plain):
        result = runner.invoke(app, ["eval", "score", "-p", str(table), "-t", str(files["truth"]), "--json",
                                     "--resamples", "0", "--no-places"])
        assert result.exit_code == 0, result.output
        scores[table.name] = json.loads(result.stdout)
    for data in scores.values():
        assert data["n"] == 4 and data["failures"] == 2
        assert data["acc_km"]["25"]["value"] == pytest.approx(0.5)
    assert scores[exported.name]["failure_reasons"].get("VLM returned no JSON") == 1
    assert (scores[exported.name]["degraded"], scores[plain.name]["degraded"]) == (1, 0)


@pytest.mark.parametrize(
    ("header", "missing"), [("name,lat,lon", "an image id"), ("id,x,y", "a latitude or a longitude")]
)
def test_a_table_without_an_id_or_coordinate_column_is_a_clear_error(
    files: dict[str, Path], header: str, missing: str
) -> None:
    table = files["dir"] / "table.csv"
    table.write_text(f"{header}\na.jpg,1,2\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", "score", "-p", str(table), "-t", str(files["truth"])])
    assert result.exit_code == 2
    assert f"no column for {missing}" in _unwrapped(result.stderr) and "table.csv" in _unwrapped(result.stderr)
