"""Statuses in batch runs: the circuit breaker stops an outage without writing degraded lines, an
isolated degraded answer is recorded as one, resume counts every status, and every line is fsync'd
(off the event loop's thread) before it counts as done."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from geosleuth.agent.batch import (
    BatchCircuitOpen,
    BatchItem,
    CircuitBreaker,
    read_batch_input,
    read_results,
    run_batch,
)
from geosleuth.agent.exports import to_geojson, to_kml
from geosleuth.types import Prediction, PredictionStatus

GOOD = ["a.jpg", "b.png", "c.jpeg", "sub/d.jpg", "sub/e.JPG", "z.webp"]


def degraded(prediction: Prediction, stages: tuple[str, ...] = ("vlm",)) -> Prediction:
    return Prediction.model_validate({**prediction.model_dump(), "missing_stages": list(stages)})


def statuses(path: Path) -> dict[str, str]:
    return {r.id: r.status for r in read_results(path)}


class Outage:
    """A locate function whose VLM is fine for the first ``healthy`` calls, then gone (every answer
    degraded), optionally back after ``back_after`` calls; records which ids it was asked for."""

    def __init__(self, make_prediction, healthy: int, back_after: int | None = None) -> None:
        self.make_prediction = make_prediction
        self.healthy = healthy
        self.back_after = back_after
        self.calls: list[str] = []

    async def __call__(self, item: BatchItem) -> Prediction:
        import asyncio

        self.calls.append(item.id)
        n = len(self.calls)
        await asyncio.sleep(0.01 * (n % 3))  # finish out of order
        prediction = self.make_prediction(item.path)
        down = n > self.healthy and (self.back_after is None or n <= self.back_after)
        return degraded(prediction) if down else prediction


# ------------------------------------------------------------------------------------ the breaker


def test_breaker_opens_after_three_failures_of_one_kind_in_a_row() -> None:
    breaker = CircuitBreaker()
    for kind in ("missing vlm", "missing vlm", None, "missing vlm", "missing gallery", "missing vlm", "missing vlm"):
        breaker.record(kind)
        assert not breaker.tripped, kind
    breaker.record("missing vlm")
    assert breaker.tripped and breaker.reason == "3 images in a row came back with missing vlm"


def test_breaker_opens_when_most_of_a_recent_window_failed() -> None:
    breaker = CircuitBreaker(consecutive=100, window=10, max_share=0.5)
    for i in range(10):  # alternating: never 2 in a row, but half of the window
        breaker.record("missing vlm" if i % 2 else None)
    assert not breaker.tripped  # 5 of 10 is not more than half
    breaker.record("missing vlm")
    assert breaker.tripped and "6 of the last 10" in (breaker.reason or "")


# ------------------------------------------------------------------------- outages in a batch run


def test_an_outage_stops_the_run_without_writing_degraded_lines_and_resume_finishes_it(
    photo_folder: Path, make_prediction, tmp_path: Path
) -> None:
    items = [i for i in read_batch_input(photo_folder).items if i.id in GOOD]
    out = tmp_path / "r.jsonl"
    with pytest.raises(BatchCircuitOpen, match="--resume") as caught:
        run_batch(items, Outage(make_prediction, healthy=2), out, concurrency=2)
    summary = caught.value.summary
    assert summary.circuit_open == "3 images in a row came back with missing vlm"
    written = statuses(out)
    assert set(written.values()) == {"ok"} and len(written) == summary.ok == 2
    assert summary.degraded == 0 and summary.discarded_degraded >= 3

    back = Outage(make_prediction, healthy=len(items))
    resumed = run_batch(items, back, out, resume=True, concurrency=2)
    assert sorted(back.calls) == sorted(set(GOOD) - set(written))  # only what was not written
    final = [r.id for r in read_results(out)]
    assert sorted(final) == sorted(GOOD), "every photo exactly once"
    assert set(statuses(out).values()) == {"ok"} and resumed.degraded_total == 0


def test_an_isolated_degraded_answer_is_written_as_degraded(photo_folder: Path, make_prediction, tmp_path: Path):
    items = [i for i in read_batch_input(photo_folder).items if i.id in GOOD]
    out = tmp_path / "r.jsonl"
    summary = run_batch(items, Outage(make_prediction, healthy=2, back_after=3), out, concurrency=1)
    assert Counter(statuses(out).values()) == {"ok": 5, "degraded": 1}
    assert (summary.ok, summary.degraded, summary.missing_stages) == (5, 1, Counter({"vlm": 1}))
    line = next(json.loads(raw) for raw in out.read_text().splitlines() if '"degraded"' in raw)
    assert line["prediction"]["status"] == "degraded" and line["prediction"]["missing_stages"] == ["vlm"]


def test_allow_degraded_keeps_going_and_records_each_answer_as_what_it_is(
    photo_folder: Path, make_prediction, tmp_path: Path
) -> None:
    items = [i for i in read_batch_input(photo_folder).items if i.id in GOOD]
    out = tmp_path / "r.jsonl"
    summary = run_batch(items, Outage(make_prediction, healthy=1), out, allow_degraded=True)
    assert Counter(statuses(out).values()) == {"ok": 1, "degraded": 5}
    assert summary.degraded == summary.degraded_total == 5 and summary.circuit_open is None


# ------------------------------------------------------------------ resume bookkeeping (issue 17.3)


def _results_file(path: Path, photo_folder: Path, make_prediction) -> None:
    """ok: a.jpg, b.png; degraded: c.jpeg; failed (no coordinate): sub/d.jpg; error: broken_text.jpg."""
    rows = [
        {"id": "a.jpg", "prediction": make_prediction("a.jpg")},
        {"id": "b.png", "prediction": make_prediction("b.png")},
        {"id": "c.jpeg", "prediction": degraded(make_prediction("c.jpeg"))},
        {"id": "sub/d.jpg", "prediction": make_prediction("sub/d.jpg", None, None)},
        {"id": "broken_text.jpg", "error": "cannot load image", "error_type": "ImageLoadError"},
    ]
    text = ""
    for row in rows:
        if "prediction" in row:
            row["prediction"] = row["prediction"].model_dump(mode="json")
        text += json.dumps({"path": str(photo_folder / row["id"]), **row}) + "\n"
    path.write_text(text)


def test_resume_counts_every_status_already_in_the_file(photo_folder: Path, make_locator, make_prediction, tmp_path):
    out = tmp_path / "r.jsonl"
    _results_file(out, photo_folder, make_prediction)
    items = read_batch_input(photo_folder).items
    summary = run_batch(items, make_locator(), out, resume=True)
    assert summary.previously_done == 5
    assert dict(summary.previous) == {"ok": 2, "degraded": 1, "failed": 1, "error": 1}
    assert summary.previous_failed == 2, "the failed prediction and the error line have no coordinate"
    assert summary.degraded_total == 1
    # This run: the 2 good photos not in the file, the 2 broken ones not in it.
    assert (summary.ok, summary.errors, summary.done_this_run) == (2, 2, 4)
    assert summary.failed == 4 and summary.remaining == 0


def test_resume_with_retry_degraded_runs_only_the_degraded_again(
    photo_folder: Path, make_locator, make_prediction, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    _results_file(out, photo_folder, make_prediction)
    items = [i for i in read_batch_input(photo_folder).items if i.id in {"a.jpg", "b.png", "c.jpeg", "sub/d.jpg"}]
    locator = make_locator()
    summary = run_batch(items, locator, out, resume=True, retry_degraded=True)
    assert locator.calls == ["c.jpeg"]
    assert summary.retried == {"degraded": 1} and summary.degraded_total == 0
    assert statuses(out)["c.jpeg"] == "ok" and len(read_results(out)) == 5


def test_lines_written_before_statuses_are_read_with_a_status(photo_folder: Path, make_prediction, tmp_path: Path):
    """Schema 1.0 had no status: a VLM that gave nothing shows as a failed reason step and no "vlm" source."""
    from geosleuth.types import StepFailure

    old = make_prediction("a.jpg").model_dump(mode="json")
    old.pop("status"), old.pop("missing_stages")
    old["schema_version"] = "1.0"
    down = {**old, "sources_used": ["gps-gallery"],
            "failures": [StepFailure(step="reason", error="the VLM step failed").model_dump()]}
    out = tmp_path / "old.jsonl"
    out.write_text("".join(json.dumps({"id": i, "prediction": p}) + "\n" for i, p in (("a.jpg", down), ("b", old))))
    assert statuses(out) == {"a.jpg": "degraded", "b": "ok"}
    assert read_results(out)[0].prediction.missing_stages == ["vlm"]
    summary = run_batch([BatchItem("a.jpg", "x"), BatchItem("b", "y")], None, out, resume=True)  # type: ignore[arg-type]
    assert dict(summary.previous) == {"degraded": 1, "ok": 1}


# ------------------------------------------------------------------------- durability (issue 17.4)


def test_each_line_is_fsynced_off_the_loop_thread_before_it_counts(
    photo_folder: Path, make_locator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.jsonl"
    real_fsync = os.fsync
    synced: list[tuple[str, int]] = []  # (thread name, file size at the fsync) for the results file

    def counting_fsync(fd: int) -> None:
        real_fsync(fd)
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(out.resolve()):
            synced.append((threading.current_thread().name, os.fstat(fd).st_size))

    monkeypatch.setattr(os, "fsync", counting_fsync)
    seen_at_callback: list[tuple[int, int]] = []

    def on_result(result) -> None:  # by now the line must be on disk
        seen_at_callback.append((len(synced), synced[-1][1] if synced else 0))

    items = read_batch_input(photo_folder).items
    run_batch(items, make_locator(), out, concurrency=3, on_result=on_result)
    size = out.stat().st_size
    assert len(synced) == len(items), "one fsync per committed line"
    assert seen_at_callback == [(n, synced[n - 1][1]) for n in range(1, len(items) + 1)]
    assert synced[-1][1] == size
    assert all(name != threading.main_thread().name for name, _ in synced), "fsync runs off the event loop's thread"


def test_exports_carry_each_images_status(photo_folder: Path, make_prediction, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    _results_file(out, photo_folder, make_prediction)
    records = read_results(out)
    features = {f["id"]: f["properties"] for f in to_geojson(records)["features"]}
    assert features["c.jpeg"]["status"] == "degraded" and features["c.jpeg"]["missing_stages"] == "vlm"
    assert features["a.jpg"]["status"] == "ok" and features["a.jpg"]["missing_stages"] == ""
    kml = to_kml(records)
    ns = "{http://www.opengis.net/kml/2.2}"
    marks = {m.find(f"{ns}name").text: m for m in kml.getroot().iter(f"{ns}Placemark")}
    data = {d.get("name"): d.find(f"{ns}value").text for d in marks["c.jpeg"].iter(f"{ns}Data")}
    assert data["status"] == "degraded" and data["missing_stages"] == "vlm"
    assert "degraded: no vlm" in marks["c.jpeg"].find(f"{ns}description").text
    assert PredictionStatus(records[3].status) is PredictionStatus.FAILED
