"""Real faults against the real CPU vLLM server: the server is SIGKILLed in the middle of a batch
(the run stops by itself with exit code 4, nothing written twice, no degraded line), then restarted
and the batch resumed (every photo exactly once, none degraded). The batch runs as its own process
through the installed `geosleuth` entry point, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

PHOTOS = 10
GEOSLEUTH = str(Path(sys.executable).with_name("geosleuth"))
# The CLI's own console must not wrap messages (they quote tmp paths).
CLI_ENV = {**os.environ, "COLUMNS": "4000", "HF_HUB_OFFLINE": "1"}


def _lines(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]


def test_sigkill_mid_batch_stops_cleanly_and_resume_does_every_photo_once(
    vllm_server, write_tiny_config, tmp_path: Path
) -> None:
    from geosleuth.testing.photos import write_jpeg_with_gps

    config = write_tiny_config(
        tmp_path,
        retrieval={"k_gps": 10},
        # 2 prompt variants x 2 samples: with schema-forced decoding the tiny model gives at least one
        # usable answer per photo, so a healthy server makes no degraded line.
        vlm={"backend": "openai", "base_url": vllm_server.base_url, "server_model": vllm_server.model,
             "samples_per_variant": 2, "max_new_tokens": 256, "timeout_s": 30, "max_retries": 1, "concurrency": 2},
        prompts={"neighbor_counts": [0, 5]},
    )
    photos = tmp_path / "photos"
    for i in range(PHOTOS):
        write_jpeg_with_gps(photos / f"p{i:02d}.jpg", -60 + 8 * i, -170 + 21 * i)
    out = tmp_path / "results.jsonl"
    command = [GEOSLEUTH, "-c", str(config), "batch", str(photos), "--out", str(out), "-j", "2"]

    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLI_ENV)
    try:
        deadline = time.monotonic() + 300
        while len(_lines(out)) < 3:  # a few photos done: the run is well under way
            assert run.poll() is None, f"the batch ended before the kill:\n{run.communicate()}"
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.2)
        os.killpg(vllm_server.server.pid, signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 4, f"{stdout}\n{stderr}"
    assert "circuit breaker" in stdout and "--resume" in stderr
    first = _lines(out)
    ids = Counter(line["id"] for line in first)
    assert 3 <= len(ids) < PHOTOS and max(ids.values()) == 1, "nothing written twice"
    assert {line["prediction"]["status"] for line in first} == {"ok"}, "no degraded line"

    vllm_server._server.stop()  # reap the killed process group, then start a fresh server
    assert vllm_server.server.is_running()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=CLI_ENV, timeout=600)
    assert resumed.returncode == 0, f"{resumed.stdout}\n{resumed.stderr}"
    final = _lines(out)
    assert sorted(line["id"] for line in final) == [f"p{i:02d}.jpg" for i in range(PHOTOS)], "each photo once"
    assert [line["id"] for line in final[: len(first)]] == [line["id"] for line in first], "earlier lines kept"
    assert Counter(line["prediction"]["status"] for line in final) == {"ok": PHOTOS}, "0 degraded"
