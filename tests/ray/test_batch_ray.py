"""The Ray batch engine on a local Ray cluster: the local engine's answers and results file, resume
without duplicates, a SIGKILLed driver losing only photos in flight, the CLI's --engine ray."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from geosleuth.agent.batch import read_batch_input, run_batch
from geosleuth.agent.batch.ray_engine import RayBatchOptions, run_ray_batch
from geosleuth.config import load_config
from geosleuth.types import Prediction, Trace


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def comparable(row: dict) -> dict:
    """A results line without what differs between any two runs (trace ids are random)."""
    row = json.loads(json.dumps(row))
    if "prediction" in row:
        row["prediction"].pop("trace_id")
    return row


def test_ray_engine_gives_the_local_engines_predictions(ray_cluster, ray_photos, ray_config, tmp_path):
    from geosleuth.api import Geolocator

    config = load_config(ray_config)
    items = read_batch_input(ray_photos).items
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    geo = Geolocator(config)
    run_batch(items, lambda item: geo.alocate(item.path), local_out)
    summary = run_ray_batch(items, config, ray_out, options=RayBatchOptions(actors=2, shard_size=3))

    parquet = pd.read_parquet(ray_out.with_suffix(".parquet"))
    assert sorted(parquet["id"]) == sorted(r["id"] for r in rows(ray_out))
    in_parquet = zip(parquet["id"], parquet["prediction"], strict=True)
    assert {i: json.loads(p) for i, p in in_parquet if isinstance(p, str)} == {
        r["id"]: r["prediction"] for r in rows(ray_out) if "prediction" in r
    }
    local = {r["id"]: comparable(r) for r in rows(local_out)}
    remote = {r["id"]: comparable(r) for r in rows(ray_out)}
    assert len(rows(ray_out)) == len(items) == 9
    assert remote == local
    assert remote["broken.jpg"]["error_type"] == "ImageLoadError"
    assert Prediction.model_validate(remote["sub/br6.png"]["prediction"]).ok
    assert (summary.ok, summary.errors, summary.total) == (8, 1, 9)
    _assert_the_actors_freed_the_cluster()


def _assert_the_actors_freed_the_cluster() -> None:
    """A run on a cluster that outlives it gives its actors' CPUs back when it ends."""
    import ray

    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, f"CPUs still held after the run: {ray.available_resources()}"
        time.sleep(0.1)


def test_cli_engine_ray_writes_results_traces_and_exports(ray_cluster, ray_photos, ray_config, tmp_path):
    from typer.testing import CliRunner

    from geosleuth.cli import app

    out, traces = tmp_path / "r.jsonl", tmp_path / "traces"
    args = ["--config", str(ray_config), "batch", str(ray_photos), "--out", str(out), "--engine", "ray",
            "--trace-dir", str(traces), "--format", "csv"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output  # broken.jpg has no location
    assert re.search(r"located this run\s+8\s*\n", result.stdout)
    assert re.search(r"errors\s+1 \(ImageLoadError 1\)", result.stdout)
    by_id = {r["id"]: r for r in rows(out)}
    assert len(by_id) == len(rows(out)) == 9
    written = {Trace.model_validate_json(p.read_text()).trace_id for p in traces.glob("*.json")}
    assert written == {r["prediction"]["trace_id"] for r in by_id.values() if "prediction" in r}
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 10

    (ray_photos / "broken.jpg").rename(tmp_path / "kept.jpg")  # fixed: now a readable photo
    try:
        (ray_photos / "broken.jpg").write_bytes((ray_photos / "jp1.png").read_bytes())
        again = CliRunner().invoke(app, [*args[:-2], "--resume", "--retry-errors"], env={"COLUMNS": "200"})
    finally:
        (tmp_path / "kept.jpg").rename(ray_photos / "broken.jpg")
    assert again.exit_code == 0, again.output
    assert re.search(r"retried\s+1 error image", again.stdout) and re.search(r"located this run\s+1\s*\n", again.stdout)
    assert sorted(r["id"] for r in rows(out)) == sorted(by_id) and "prediction" in rows(out)[-1]

    assert CliRunner().invoke(app, ["batch", str(ray_photos), "--out", str(out), "--address", "x:1"]).exit_code == 2


def test_sigkilled_driver_loses_only_photos_in_flight_and_resume_duplicates_none(
    ray_cluster, ray_config, tmp_path
):
    from geosleuth.testing import photos
    from geosleuth.testing.synthetic import synthetic_photo

    folder = tmp_path / "many"
    for i in range(48):
        photos.write_photo(folder / f"p{i:02d}.png", image=synthetic_photo("JP", seed=i))
    out = tmp_path / "r.jsonl"
    command = [str(Path(sys.executable).with_name("geosleuth")), "--config", str(ray_config), "batch", str(folder),
               "--out", str(out), "--engine", "ray", "--address", ray_cluster]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_file() and out.stat().st_size > 0):  # the first shard is committed
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard committed in 240 s"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    before = [r["id"] for r in rows(out)]
    assert 0 < len(before) < 48, "the driver was killed before it finished"

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = [r["id"] for r in rows(out)]
    assert sorted(after) == [f"p{i:02d}.png" for i in range(48)]  # each exactly once
    assert after[: len(before)] == before  # committed lines were kept, not redone
    assert sorted(pd.read_parquet(out.with_suffix(".parquet"))["id"]) == sorted(after)  # the Parquet shards too


def test_a_setup_error_in_the_actors_stops_the_run_and_names_the_problem(
    ray_cluster, ray_photos, write_tiny_config, tmp_path
):
    from geosleuth.agent.batch import BatchAborted

    missing = tmp_path / "no-such-model"
    config = load_config(write_tiny_config(tmp_path, vlm={"backend": "none"}, encoders={"image_model": str(missing)}))
    out = tmp_path / "r.jsonl"
    with pytest.raises(BatchAborted, match="no-such-model") as stopped:
        run_ray_batch(read_batch_input(ray_photos).items, config, out, options=RayBatchOptions(actors=1))
    assert stopped.value.summary.done_this_run == 0 and out.read_text() == ""


def test_a_sigkilled_worker_loses_nothing_and_duplicates_nothing(ray_cluster, ray_config, tmp_path):
    from geosleuth.testing import photos
    from geosleuth.testing.synthetic import synthetic_photo

    folder = tmp_path / "many"
    for i in range(24):
        photos.write_photo(folder / f"p{i:02d}.png", image=synthetic_photo("KE", seed=i))
    killed: list[int] = []

    def kill_a_worker(_result) -> None:  # after the first committed shard: SIGKILL one actor process
        import psutil

        if killed:
            return
        # Only this session's cluster (started by this process): other Ray instances may run here too.
        for process in psutil.Process().children(recursive=True):
            try:
                title = process.cmdline()
            except psutil.Error:  # the process ended meanwhile
                continue
            if title and title[0].startswith("ray::LocateActor"):  # Ray names actor processes after their class
                os.kill(process.pid, signal.SIGKILL)
                killed.append(process.pid)
                return

    out = tmp_path / "r.jsonl"
    summary = run_ray_batch(read_batch_input(folder).items, load_config(ray_config), out,
                            options=RayBatchOptions(actors=2, shard_size=2), on_result=kill_a_worker)
    assert killed, "no actor process was found to kill"
    assert sorted(r["id"] for r in rows(out)) == [f"p{i:02d}.png" for i in range(24)]
    assert summary.ok == 24


def test_engine_ray_without_ray_installed_says_how_to_install_it(ray_photos, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from geosleuth.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as without the extra
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["batch", str(ray_photos), "--out", str(out), "--engine", "ray"])
    assert result.exit_code == 2, result.output
    assert "pip install 'geosleuth[ray]'" in result.output
    assert not out.exists()


def test_vlm_server_down_stops_a_ray_run_before_any_photo_with_exit_4(
    ray_cluster, ray_photos, write_tiny_config, tmp_path
):
    import socket

    from typer.testing import CliRunner

    from geosleuth.cli import app

    with socket.socket() as sock:  # a port on 127.0.0.1 where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_tiny_config(tmp_path, vlm={"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                                              "timeout_s": 5, "max_retries": 0})
    out = tmp_path / "r.jsonl"
    args = ["-c", str(config), "batch", str(ray_photos), "--out", str(out), "--engine", "ray"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 4, result.output
    assert f"127.0.0.1:{port}" in result.output
    # The driver's preflight stops the run before Ray starts (each actor checks again on a cluster):
    # no photo ran, no line was written.
    assert not out.exists() or out.read_text() == ""
