"""`geosleuth batch` and `geosleuth export`: results line by line, errors counted, resume, exports."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from geosleuth.agent.exports import KML_NAMESPACE
from geosleuth.cli import app
from geosleuth.types import Prediction, Trace

runner = CliRunner()
ALL_IDS = ["b.png", "broken.jpg", "nowhere.jpg", "porto.jpg", "sub/c.jpg", "sub/cut.jpg"]


def rows(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_batch_over_a_folder_records_every_image_and_exits_1_when_some_failed(fake_geo, folder, tmp_path):
    out = tmp_path / "results.jsonl"
    result = runner.invoke(app, ["batch", str(folder), "--out", str(out), "-j", "3",
                                 "--format", "geojson", "--format", "csv", "--format", "kml"])
    assert result.exit_code == 1, result.output
    lines = rows(out)
    assert sorted(lines) == ALL_IDS
    assert lines["broken.jpg"]["error_type"] == "ImageLoadError"
    assert lines["sub/cut.jpg"]["error_type"] == "ImageLoadError"
    assert Prediction.model_validate(lines["porto.jpg"]["prediction"]).ok
    assert lines["nowhere.jpg"]["prediction"]["failure_reason"]
    assert fake_geo.max_in_flight <= 3 and fake_geo.closed

    summary = result.stdout
    assert re.search(r"images in input\s+6\s*\n", summary)
    assert re.search(r"located this run\s+3\s*\n", summary)
    assert re.search(r"no location \(see failure_reason\)\s+1\s*\n", summary)
    assert re.search(r"errors\s+2 \(ImageLoadError 2\)", summary)

    geojson = json.loads(out.with_suffix(".geojson").read_text())
    assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == 3
    assert geojson["features"][0]["geometry"]["coordinates"] == [-9.1393, 38.7223]
    assert out.with_suffix(".csv").read_text().startswith("id,path,status,lat,lon")
    assert ET.parse(out.with_suffix(".kml")).getroot().tag == f"{{{KML_NAMESPACE}}}kml"


def test_images_in_flight_default_to_twice_the_vlm_concurrency(fake_geo, folder, tmp_path):
    # Twice: while some images are in CPU stages, the others keep the VLM server's batch full.
    fake_geo.delay = 0.05
    args = ["--set", "vlm.concurrency=2", "batch", str(folder), "--out", str(tmp_path / "r.jsonl")]
    assert runner.invoke(app, args).exit_code == 1
    assert fake_geo.max_in_flight == 4
    fake_geo.max_in_flight = 0
    assert runner.invoke(app, [*args, "--overwrite", "--concurrency", "3"]).exit_code == 1
    assert fake_geo.max_in_flight == 3


def test_resume_runs_only_what_is_missing(fake_geo, folder, tmp_path):
    out = tmp_path / "r.jsonl"
    listing = tmp_path / "first.txt"
    listing.write_text(f"{folder / 'b.png'}\n{folder / 'porto.jpg'}\n")
    everything = tmp_path / "all.txt"
    everything.write_text("".join(f"{folder / i}\n" for i in ALL_IDS))
    assert runner.invoke(app, ["batch", str(listing), "--out", str(out)]).exit_code == 0

    refused = runner.invoke(app, ["batch", str(everything), "--out", str(out)])
    assert refused.exit_code == 2 and "--resume" in refused.output
    fake_geo.calls.clear()
    resumed = runner.invoke(app, ["batch", str(everything), "--out", str(out), "--resume"])
    assert resumed.exit_code == 1, resumed.output
    assert re.search(r"already done \(skipped\)\s+2 \(ok 2\)\s*\n", resumed.stdout)
    assert sorted(fake_geo.calls) == sorted(str(folder / i) for i in ALL_IDS if i not in ("b.png", "porto.jpg"))
    assert len(out.read_text().splitlines()) == len(ALL_IDS)


def test_trace_dir_gets_one_trace_per_image(fake_geo, folder, tmp_path):
    traces = tmp_path / "traces"
    result = runner.invoke(app, ["batch", str(folder), "--out", str(tmp_path / "r.jsonl"), "--trace-dir", str(traces)])
    assert result.exit_code == 1, result.output
    files = sorted(p.name for p in traces.iterdir())
    assert len(files) == 4  # the two broken images have no trace
    assert "porto.jpg.json" in files and any(name.startswith("sub_c.jpg-") for name in files)
    trace = Trace.model_validate_json((traces / "porto.jpg.json").read_text())
    assert trace.image.path == str(folder / "porto.jpg")


def test_out_must_be_the_jsonl_results_file(fake_geo, folder, tmp_path):
    result = runner.invoke(app, ["batch", str(folder), "--out", str(tmp_path / "r.geojson")])
    assert result.exit_code == 2
    assert "--format geojson" in result.output
    assert not (tmp_path / "r.geojson").exists()


def test_export_command_converts_an_existing_results_file(fake_geo, folder, tmp_path):
    out = tmp_path / "r.jsonl"
    runner.invoke(app, ["batch", str(folder), "--out", str(out)])
    target = tmp_path / "map.geojson"
    result = runner.invoke(app, ["export", str(out), "--format", "geojson", "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 image(s)" in result.output and "3 image(s) without a location left out" in result.output
    assert json.loads(target.read_text())["type"] == "FeatureCollection"


def test_batch_end_to_end_with_tiny_models(tiny_config: Path, folder: Path, tmp_path: Path):
    """The real Geolocator over a folder with broken images, with a tiny random LLaVA that never gives
    a usable answer: the circuit breaker stops the run without writing degraded lines; with
    --allow-degraded every image is recorded as what it is, and the eval reader reads it."""
    from geosleuth.eval.predictions import read_geosleuth_jsonl

    out = tmp_path / "results.jsonl"
    args = ["--config", str(tiny_config), "batch", str(folder), "--out", str(out),
            "--trace-dir", str(tmp_path / "traces")]
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 4, stopped.output
    assert "circuit breaker" in stopped.stdout and "--resume" in stopped.stderr
    assert all("prediction" not in row for row in rows(out).values())  # only the broken files' error lines

    result = runner.invoke(app, [*args, "--resume", "--allow-degraded"])
    assert result.exit_code == 1, result.output  # the broken files failed
    lines = rows(out)
    assert sorted(lines) == ALL_IDS
    assert {i for i, r in lines.items() if "error" in r} == {"broken.jpg", "sub/cut.jpg"}
    for image_id in ("b.png", "nowhere.jpg", "porto.jpg", "sub/c.jpg"):
        prediction = Prediction.model_validate(lines[image_id]["prediction"])
        assert prediction.ok and prediction.trace_id
        assert prediction.status.value == "degraded" and prediction.missing_stages == ["vlm"]
    assert re.search(r"degraded this run\s+4 \(missing: vlm 4\)", result.stdout)
    assert len(list((tmp_path / "traces").iterdir())) == 4
    assert len(read_geosleuth_jsonl(out).predictions) == 6


def test_error_messages_with_brackets_are_printed_as_text(fake_geo, tmp_path):
    from geosleuth.testing import photos

    odd = photos.write_text_file(tmp_path / "in" / "odd [bold] [link=x]name.jpg")
    result = runner.invoke(app, ["batch", str(odd.parent), "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 1, result.output
    assert "error odd [bold] [link=x]name.jpg: cannot load image" in result.output


def test_a_setup_error_stops_the_batch_with_exit_2_and_keeps_finished_lines(fake_geo, folder, tmp_path, monkeypatch):
    from geosleuth.errors import GalleryIndexError

    real = fake_geo.alocate

    async def flaky(path, **kwargs):  # the gallery index breaks mid-run (retrieve raises this)
        if len(fake_geo.calls) >= 2:
            raise GalleryIndexError("gallery index /data/store is corrupt: rebuild it with `geosleuth index build`")
        return await real(path, **kwargs)

    monkeypatch.setattr(fake_geo, "alocate", flaky)
    out = tmp_path / "r.jsonl"
    result = runner.invoke(app, ["batch", str(folder), "--out", str(out), "-j", "1"])
    assert result.exit_code == 2, result.output
    assert "stopped: batch stopped: gallery index /data/store is corrupt" in result.output
    assert "--resume" in result.output
    assert len(out.read_text().splitlines()) == 2  # the two images finished before it stopped
    assert re.search(r"not done\s+4 \(re-run with --resume\)", result.stdout)
