"""The Parquet mirror of a results file holds each of its lines exactly once, whatever happened to the file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from geosleuth.agent.batch.parquet import ParquetMirror, parquet_dir


def line(i: int, ok: bool = True) -> bytes:
    row = ({"id": f"p{i}", "path": f"/x/p{i}.jpg",
            "prediction": {"image": {"path": f"/x/p{i}.jpg"}, "lat": 10.0 + i, "lon": -20.0 - i}} if ok
           else {"id": f"p{i}", "path": f"/x/p{i}.jpg", "error": "cannot read", "error_type": "ImageLoadError"})
    return (json.dumps(row) + "\n").encode()


def mirrored(results: Path) -> pd.DataFrame:
    return pd.read_parquet(parquet_dir(results)).sort_values("id").reset_index(drop=True)


def commit(results: Path, mirror: ParquetMirror | None, data: bytes) -> None:
    with results.open("ab") as handle:
        handle.write(data)
    if mirror is not None:
        mirror.append(data)
        mirror.flush()


def test_parts_follow_commits_and_reopening_fills_what_a_killed_driver_left_out(tmp_path):
    results = tmp_path / "r.jsonl"
    results.touch()
    mirror = ParquetMirror(results)
    commit(results, mirror, line(0) + line(1, ok=False))
    commit(results, mirror, line(2))
    commit(results, None, line(3))  # the driver died after the JSONL write, before the part
    frame = mirrored(results)
    assert frame["id"].tolist() == ["p0", "p1", "p2"]
    assert frame["lat"].tolist()[::2] == [10.0, 12.0] and frame["error_type"][1] == "ImageLoadError"
    assert json.loads(frame["prediction"][2])["lon"] == -22.0

    ParquetMirror(results)  # a resumed run
    assert mirrored(results)["id"].tolist() == ["p0", "p1", "p2", "p3"]


def test_a_rewritten_or_truncated_file_gets_a_fresh_mirror(tmp_path):
    results = tmp_path / "r.jsonl"
    results.touch()
    mirror = ParquetMirror(results)
    for i in range(4):
        commit(results, mirror, line(i, ok=i != 1))
    results.write_bytes(line(0) + line(2) + line(3))  # --retry-errors dropped p1's error line
    ParquetMirror(results)
    assert mirrored(results)["id"].tolist() == ["p0", "p2", "p3"]
    results.write_bytes(b"")  # --overwrite
    ParquetMirror(results)
    assert list(parquet_dir(results).iterdir()) == []


def test_a_shard_delivered_twice_is_committed_once(tmp_path):
    import asyncio
    import pickle

    from geosleuth.agent.batch import BatchItem, BatchResult, BatchSummary
    from geosleuth.agent.batch.local import Committer
    from geosleuth.agent.batch.ray_engine import _commit_all
    from geosleuth.types import ImageRef, Prediction

    results = [BatchResult(BatchItem(f"p{i}", f"/x/p{i}.jpg"), Prediction(image=ImageRef(path=f"/x/p{i}.jpg"),
                                                                         lat=1.0 + i, lon=2.0)) for i in range(3)]
    shard = {"id": [r.item.id for r in results], "result": [pickle.dumps(r) for r in results], "trace": [""] * 3,
             "stop": [b""] * 3}
    out = tmp_path / "r.jsonl"
    out.touch()
    mirror, done, summary = ParquetMirror(out), {"p0"}, BatchSummary(out)  # p0 was committed by an earlier run

    def write(data: bytes) -> None:
        with out.open("ab") as handle:
            handle.write(data)
        mirror.append(data)

    committer = Committer(write, summary, None, None, {f"p{i}": i for i in range(3)})
    # The second delivery: e.g. a retried task handing the same shard over again.
    asyncio.run(_commit_all([shard, shard], committer, None, mirror, done, None))
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p1", "p2"]
    assert mirrored(out)["id"].tolist() == ["p1", "p2"] and summary.ok == 2
