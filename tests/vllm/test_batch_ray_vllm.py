"""A small `geosleuth batch --engine ray` against the real CPU vLLM server: Ray actors send the reasoning
requests to the OpenAI-compatible server, as on a GPU cluster."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from geosleuth.cli import app
from geosleuth.testing.photos import write_jpeg_with_gps
from geosleuth.types import Prediction, Trace


def test_ray_batch_reasons_with_the_vllm_server(ray_cluster, vllm_server, write_tiny_config, tmp_path: Path) -> None:
    config = write_tiny_config(
        tmp_path,
        retrieval={"k_gps": 10},
        vlm={"backend": "openai", "base_url": vllm_server.base_url, "server_model": vllm_server.model,
             "samples_per_variant": 2, "max_new_tokens": 256, "timeout_s": 60, "concurrency": 4},
        prompts={"neighbor_counts": [0, 5]},
    )
    photos = tmp_path / "photos"
    for i, (lat, lon) in enumerate([(48.85, 2.35), (35.68, 139.69)]):
        write_jpeg_with_gps(photos / f"p{i}.jpg", lat, lon)
    out, traces = tmp_path / "results.jsonl", tmp_path / "traces"
    args = ["-c", str(config), "batch", str(photos), "--out", str(out), "--engine", "ray", "--trace-dir", str(traces)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert sorted(lines) == ["p0.jpg", "p1.jpg"]
    for row in lines.values():
        prediction = Prediction.model_validate(row["prediction"])
        assert prediction.ok and "vlm" in prediction.sources_used
    for file in traces.glob("*.json"):
        trace = Trace.model_validate_json(file.read_text())
        assert "tiny-qwen2.5-vl" in trace.models["vlm"]  # the server answered, from a Ray actor
        reason = next(event for event in trace.events if event.step == "reason")
        assert reason.outputs["hypotheses"], reason.outputs["failures"]
    assert len(list(traces.glob("*.json"))) == 2
