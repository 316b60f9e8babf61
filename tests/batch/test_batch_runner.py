"""The batch runner: inputs, one durable line per image, errors recorded, resume without duplicates."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from geosleuth.agent.batch import (
    BatchAborted,
    BatchItem,
    read_batch_input,
    read_results,
    run_batch,
    scan_results,
)
from geosleuth.errors import DataFileError, ModelNotAvailableError
from geosleuth.types import Prediction

GOOD = ["a.jpg", "b.png", "c.jpeg", "sub/d.jpg", "sub/e.JPG", "z.webp"]
BROKEN = ["broken_empty.png", "broken_text.jpg", "sub/broken_truncated.jpg"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ inputs


def test_folder_input_is_recursive_sorted_with_relative_ids(photo_folder: Path):
    batch = read_batch_input(photo_folder)
    assert batch.kind == "folder"
    assert [i.id for i in batch.items] == sorted(GOOD + BROKEN)
    assert all(Path(i.path).is_file() for i in batch.items)
    assert batch.ignored_files == 1  # notes.txt; the hidden file is not counted as an image either


def test_csv_input_takes_path_and_id_columns_relative_to_the_csv(tmp_path: Path, photo_folder: Path):
    csv_file = photo_folder / "list.csv"
    csv_file.write_text("IMG_ID,Path,lat\nx1,a.jpg,1\nx2,sub/d.jpg,2\n")
    batch = read_batch_input(csv_file)
    assert [(i.id, i.path) for i in batch.items] == [
        ("x1", str(photo_folder / "a.jpg")),
        ("x2", str(photo_folder / "sub/d.jpg")),
    ]


def test_csv_without_a_path_column_says_what_it_looked_for(tmp_path: Path):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("name,lat\nfoo,1\n")
    with pytest.raises(DataFileError, match="no image path column.*found name, lat"):
        read_batch_input(csv_file)


def test_list_file_skips_comments_and_rejects_duplicate_ids(tmp_path: Path, photo_folder: Path):
    listing = tmp_path / "images.txt"
    listing.write_text(f"# my images\n{photo_folder / 'a.jpg'}\n\n{photo_folder / 'b.png'}\n")
    assert [i.path for i in read_batch_input(listing).items] == [
        str(photo_folder / "a.jpg"), str(photo_folder / "b.png"),
    ]
    listing.write_text(f"{photo_folder / 'a.jpg'}\n{photo_folder / 'a.jpg'}\n")
    with pytest.raises(DataFileError, match="appears twice.*line 1 and line 2"):
        read_batch_input(listing)


def test_missing_input_and_single_image_get_clear_messages(tmp_path: Path, photo_folder: Path):
    with pytest.raises(DataFileError, match="does not exist"):
        read_batch_input(tmp_path / "nope")
    with pytest.raises(DataFileError, match="geosleuth locate"):
        read_batch_input(photo_folder / "a.jpg")


# ------------------------------------------------------------------------------------------ running


def test_folder_with_broken_images_finishes_with_each_failure_recorded(photo_folder, make_locator, tmp_path):
    out = tmp_path / "results.jsonl"
    locator = make_locator(no_coordinate={"c.jpeg"})
    seen = []
    items = read_batch_input(photo_folder).items
    summary = run_batch(items, locator, out, concurrency=3, on_result=seen.append)

    rows = {row["id"]: row for row in lines(out)}
    assert sorted(rows) == sorted(GOOD + BROKEN)
    for image_id in BROKEN:
        assert rows[image_id]["error_type"] == "ImageLoadError"
        assert image_id.split("/")[-1] in rows[image_id]["error"]  # the message names the file
        assert "prediction" not in rows[image_id]
    for image_id in GOOD:
        prediction = Prediction.model_validate(rows[image_id]["prediction"])
        assert rows[image_id]["path"] == str(photo_folder / image_id)
        assert prediction.ok == (image_id != "c.jpeg")
    assert rows["c.jpeg"]["prediction"]["failure_reason"]
    assert (summary.ok, summary.no_coordinate, summary.errors, summary.failed) == (5, 1, 3, 4)
    assert summary.error_types == {"ImageLoadError": 3}
    assert len(seen) == 9


def test_results_file_is_what_the_eval_reader_expects(photo_folder, make_locator, tmp_path):
    from geosleuth.eval.predictions import read_geosleuth_jsonl

    out = tmp_path / "results.jsonl"
    run_batch(read_batch_input(photo_folder).items, make_locator(), out)
    read = {p.id: p for p in read_geosleuth_jsonl(out).predictions}
    assert sorted(read) == sorted(GOOD + BROKEN)
    assert (read["a.jpg"].lat, read["a.jpg"].lon) == pytest.approx((38.7223, -9.1393))
    assert not read["broken_text.jpg"].ok


def test_many_images_are_in_flight_at_once(make_locator, tmp_path, photo_folder):
    items = [BatchItem(f"img{i}", str(photo_folder / "a.jpg")) for i in range(12)]
    locator = make_locator(delay=0.05)
    started = time.perf_counter()
    run_batch(items, locator, tmp_path / "r.jsonl", concurrency=4)
    assert locator.max_in_flight == 4
    assert time.perf_counter() - started < 12 * 0.05  # not one at a time


def test_each_line_is_on_disk_when_its_callback_runs(photo_folder, make_locator, tmp_path):
    out = tmp_path / "r.jsonl"
    counts = []
    run_batch(read_batch_input(photo_folder).items, make_locator(), out, concurrency=2,
              on_result=lambda r: counts.append(len(lines(out))))
    assert counts == list(range(1, 10))


def test_existing_results_are_never_overwritten_by_accident(photo_folder, make_locator, tmp_path):
    out = tmp_path / "r.jsonl"
    items = read_batch_input(photo_folder).items
    run_batch(items[:2], make_locator(), out)
    before = out.read_bytes()
    with pytest.raises(DataFileError, match="--resume"):
        run_batch(items, make_locator(), out)
    assert out.read_bytes() == before
    run_batch(items, make_locator(), out, overwrite=True)
    assert len(lines(out)) == len(items)


def test_resume_truncates_a_half_written_line_and_skips_done_images(photo_folder, make_locator, tmp_path):
    out = tmp_path / "r.jsonl"
    items = read_batch_input(photo_folder).items
    run_batch(items[:4], make_locator(), out)
    with out.open("ab") as handle:  # what a SIGKILL in the middle of a write leaves
        handle.write(b'{"id": "sub/d.jpg", "path": "x", "predic')
    assert scan_results(out).partial_tail

    locator = make_locator()
    summary = run_batch(items, locator, out, resume=True)
    assert summary.truncated_partial_line
    assert summary.previously_done == 4
    assert sorted(locator.calls) == sorted(i.id for i in items[4:])
    ids = [row["id"] for row in lines(out)]
    assert sorted(ids) == sorted(i.id for i in items)  # exactly one line each


def test_resume_with_retry_errors_runs_failed_images_again(photo_folder, make_locator, tmp_path):
    out = tmp_path / "r.jsonl"
    items = read_batch_input(photo_folder).items
    run_batch(items, make_locator(), out)
    locator = make_locator()
    summary = run_batch(items, locator, out, resume=True, retry_errors=True)
    assert sorted(locator.calls) == sorted(BROKEN)
    assert summary.retried == {"error": 3}
    assert sorted(r.id for r in read_results(out)) == sorted(i.id for i in items)


def test_an_environment_error_stops_the_run_and_keeps_what_was_done(photo_folder, tmp_path, make_prediction):
    out = tmp_path / "r.jsonl"
    items = read_batch_input(photo_folder).items
    calls = 0

    async def locate(item: BatchItem) -> Prediction:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ModelNotAvailableError("model 'x' is not on this machine: run `geosleuth models pull x`")
        return make_prediction(item.path)

    with pytest.raises(BatchAborted, match="models pull") as caught:
        run_batch(items, locate, out, concurrency=1)
    assert caught.value.summary.ok == 2
    assert [r.id for r in read_results(out)] == [i.id for i in items[:2]]


def test_a_resumed_run_after_sigkill_has_exactly_one_line_per_image(photo_folder, tmp_path, make_locator):
    out = tmp_path / "r.jsonl"
    script = textwrap.dedent(
        f"""
        import asyncio
        from geosleuth.agent.batch import BatchItem, run_batch
        from geosleuth.types import ImageRef, Prediction

        async def slow(item):
            await asyncio.sleep(0.05)
            return Prediction(image=ImageRef(path=item.path), lat=10.0, lon=20.0)

        items = [BatchItem(f"img{{i:03d}}", {str(photo_folder / 'a.jpg')!r}) for i in range(200)]
        run_batch(items, slow, {str(out)!r}, concurrency=4)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 12):
            assert child.poll() is None, child.stderr.read().decode()
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    done_before = scan_results(out).records
    assert 12 <= len(done_before) < 200

    items = [BatchItem(f"img{i:03d}", str(photo_folder / "a.jpg")) for i in range(200)]
    locator = make_locator()
    summary = run_batch(items, locator, out, resume=True, concurrency=8)
    ids = [row["id"] for row in lines(out)]
    assert len(ids) == len(set(ids)) == 200
    assert summary.previously_done == len(done_before)
    assert len(locator.calls) == 200 - len(done_before)


def test_concurrent_runs_on_one_file_are_refused(photo_folder, make_locator, make_prediction, tmp_path):
    out = tmp_path / "r.jsonl"
    items = read_batch_input(photo_folder).items
    started, release = threading.Event(), threading.Event()

    async def blocked(item: BatchItem) -> Prediction:
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return make_prediction(item.path)

    first = threading.Thread(target=run_batch, args=(items, blocked, out), kwargs={"concurrency": 1})
    first.start()
    try:
        assert started.wait(10)
        with pytest.raises(DataFileError, match="another geosleuth batch run"):
            run_batch(items, make_locator(), out, resume=True)
    finally:
        release.set()
        first.join(10)
    assert sorted(r.id for r in read_results(out)) == sorted(i.id for i in items)


def test_ctrl_c_keeps_finished_lines_and_says_how_far_it_got(photo_folder, tmp_path, make_prediction):
    from geosleuth.agent.batch import BatchInterrupted

    out = tmp_path / "r.jsonl"
    items = read_batch_input(photo_folder).items
    calls = 0

    async def locate(item: BatchItem) -> Prediction:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return make_prediction(item.path)

    with pytest.raises(BatchInterrupted, match="--resume") as caught:
        run_batch(items, locate, out, concurrency=1)
    assert caught.value.summary.done_this_run == 2
    assert [r.id for r in read_results(out)] == [i.id for i in items[:2]]
