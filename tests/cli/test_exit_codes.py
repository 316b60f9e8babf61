"""Exit codes and preflight through the real entry point: a run whose required stage is down never
exits 0, and says what failed and how to go on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geosleuth.cli import app
from geosleuth.errors import StageUnavailableError

runner = CliRunner()
SERVER_DOWN = StageUnavailableError(
    "preflight failed: the VLM server at http://127.0.0.1:9/v1 did not answer a test request; `geosleuth vlm serve`"
)


@pytest.mark.parametrize("command", [["locate"], ["batch"], ["chat"]])
def test_a_failed_preflight_stops_before_the_first_photo_with_exit_4(fake_geo, folder: Path, tmp_path, command):
    fake_geo.preflight_error = SERVER_DOWN
    out = tmp_path / "r.jsonl"
    target = str(folder if command == ["batch"] else folder / "b.png")
    extra = ["--out", str(out)] if command == ["batch"] else []
    result = runner.invoke(app, [*command, target, *extra], input="")
    assert result.exit_code == 4, result.output
    assert "http://127.0.0.1:9/v1" in result.stderr and "geosleuth vlm serve" in result.stderr
    assert fake_geo.calls == [] and fake_geo.preflights == 1
    assert not out.exists() or out.stat().st_size == 0


def test_locate_exits_3_for_a_degraded_answer_unless_allowed(fake_geo, folder: Path):
    fake_geo.vlm_down_for = {"b.png"}
    result = runner.invoke(app, ["locate", str(folder / "b.png")])
    assert result.exit_code == 3, result.output
    assert "status degraded: answered without vlm" in result.stdout
    allowed = runner.invoke(app, ["locate", "--json", "--allow-degraded", str(folder / "b.png")])
    assert allowed.exit_code == 0
    assert json.loads(allowed.stdout)["status"] == "degraded"


def test_batch_outage_exits_4_writes_no_degraded_line_and_resume_finishes(fake_geo, folder: Path, tmp_path: Path):
    good = tmp_path / "good"
    for name in ("b.png", "porto.jpg", "sub/c.jpg"):
        (good / name).parent.mkdir(parents=True, exist_ok=True)
        (good / name).write_bytes((folder / name).read_bytes())
    out = tmp_path / "r.jsonl"
    fake_geo.vlm_down_for = {"b.png", "porto.jpg", "c.jpg"}
    stopped = runner.invoke(app, ["batch", str(good), "--out", str(out), "-j", "1"])
    assert stopped.exit_code == 4, stopped.output
    assert "circuit breaker: 3 images in a row came back with missing vlm" in stopped.stdout
    assert "--resume" in stopped.stderr and "--allow-degraded" in stopped.stderr
    assert out.read_text() == ""

    fake_geo.vlm_down_for = set()
    resumed = runner.invoke(app, ["batch", str(good), "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["b.png", "porto.jpg", "sub/c.jpg"]
    assert {line["prediction"]["status"] for line in lines} == {"ok"}


def test_batch_with_degraded_lines_exits_3_until_they_are_retried(fake_geo, folder: Path, tmp_path: Path):
    out = tmp_path / "r.jsonl"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'b.png'}\n{folder / 'porto.jpg'}\n")
    fake_geo.vlm_down_for = {"porto.jpg"}
    first = runner.invoke(app, ["batch", str(listing), "--out", str(out), "--allow-degraded", "-f", "csv"])
    assert first.exit_code == 0, first.output
    assert "degraded this run" in first.stdout and "1 degraded" in first.stdout
    again = runner.invoke(app, ["batch", str(listing), "--out", str(out), "--resume"])
    assert again.exit_code == 3 and "--retry-degraded" in again.stderr

    assert runner.invoke(app, ["batch", str(listing), "--out", str(out), "--retry-degraded"]).exit_code == 2
    fake_geo.vlm_down_for, fake_geo.calls = set(), []
    retried = runner.invoke(app, ["batch", str(listing), "--out", str(out), "--resume", "--retry-degraded"])
    assert retried.exit_code == 0, retried.output
    assert fake_geo.calls == [str(folder / "porto.jpg")]


@pytest.mark.parametrize("command", ["locate", "batch", "chat"])
def test_help_documents_the_exit_codes(command: str):
    result = runner.invoke(app, [command, "--help"])
    text = " ".join(result.stdout.split())
    assert "3 some answers are degraded" in text and "4 a required stage is unavailable" in text
