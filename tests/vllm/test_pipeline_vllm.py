"""The whole pipeline against the real CPU vLLM server (tiny random Qwen2.5-VL): `locate` and `batch`
through the command line with ``vlm.backend = "openai"``, exactly as a user with a GPU server runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geosleuth.cli import app
from geosleuth.testing.photos import write_jpeg_with_gps, write_truncated_jpeg
from geosleuth.types import Prediction, Trace

runner = CliRunner()


@pytest.fixture(scope="module")
def server_config(vllm_server, write_tiny_config, tmp_path_factory) -> Path:
    return write_tiny_config(
        tmp_path_factory.mktemp("vllm-pipeline"),
        retrieval={"k_gps": 10},
        vlm={"backend": "openai", "base_url": vllm_server.base_url, "server_model": vllm_server.model,
             "samples_per_variant": 2, "max_new_tokens": 256, "timeout_s": 60, "concurrency": 4},
        prompts={"neighbor_counts": [0, 5]},
    )


def test_locate_returns_a_prediction_and_trace_from_the_server(server_config: Path, tmp_path: Path) -> None:
    photo = write_jpeg_with_gps(tmp_path / "photo.jpg", 38.72, -9.14)
    trace_file = tmp_path / "trace.json"
    result = runner.invoke(
        app, ["-c", str(server_config), "locate", str(photo), "--json", "--trace", str(trace_file)]
    )
    assert result.exit_code == 0, result.output
    prediction = Prediction.model_validate_json(result.stdout.strip().splitlines()[0])
    assert prediction.ok and prediction.lat is not None
    assert prediction.image.exif is not None and prediction.image.exif.gps is not None

    trace = Trace.model_validate_json(trace_file.read_text())
    assert [event.step for event in trace.events] == ["perceive", "retrieve", "reason", "verify", "decide"]
    # The server was really asked: the trace names its model and every prompt's template version.
    assert "tiny-qwen2.5-vl" in trace.models["vlm"]
    assert trace.prompts and all(p.template_id and p.template_hash for p in trace.prompts)
    reason = next(event for event in trace.events if event.step == "reason")
    # 2 variants x 2 samples, all answered by the server; schema-forced decoding makes most of them usable
    # even with random weights, and every usable one is a candidate carrying its own model and template.
    assert len(reason.outputs["raw_replies"]) >= 4
    hypotheses = reason.outputs["hypotheses"]
    assert hypotheses, reason.outputs["failures"]
    assert all(h["model"] == trace.models["vlm"] for h in hypotheses)
    assert "vlm" in prediction.sources_used


def test_batch_against_the_server_records_broken_images(server_config: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (lat, lon) in enumerate([(48.85, 2.35), (35.68, 139.69), (-33.87, 151.21)]):
        write_jpeg_with_gps(photos / f"p{i}.jpg", lat, lon)
    write_truncated_jpeg(photos / "broken.jpg")
    out = tmp_path / "results.jsonl"
    result = runner.invoke(app, ["-c", str(server_config), "batch", str(photos), "--out", str(out)])
    assert result.exit_code == 1, result.output  # one image failed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["broken.jpg", "p0.jpg", "p1.jpg", "p2.jpg"]
    by_id = {line["id"]: line for line in lines}
    assert "error" in by_id["broken.jpg"] and "broken.jpg" in by_id["broken.jpg"]["error"]
    for name in ("p0.jpg", "p1.jpg", "p2.jpg"):
        assert Prediction.model_validate(by_id[name]["prediction"]).ok
