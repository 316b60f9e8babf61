"""Parquet shards mirroring a results JSONL file: ``results.jsonl`` -> ``results.parquet/part-START-END.parquet``.

The JSONL file stays the one source of truth (resume, exports, eval read it). Each part holds the
lines of bytes ``[START, END)`` of that file, one row per line with the line's fields under one
fixed schema (:data:`COLUMNS`: ``prediction`` is the Prediction's JSON text, ``lat``/``lon`` are
copied out of it for queries), written atomically after those bytes are on disk. Opening the mirror
reconciles it with the file: parts beyond its end or out of sequence (a truncated or rewritten file:
``--overwrite``, ``--retry-errors``) are removed, and lines committed without their part (a driver
killed between the two writes) get one. So the parts always hold each line of the file exactly once.
Read them with ``pyarrow.dataset.dataset(DIR)`` or ``pandas.read_parquet(DIR)``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

PART = re.compile(r"part-(\d{12})-(\d{12})\.parquet")
COLUMNS = ("id", "path", "lat", "lon", "prediction", "error", "error_type")


def parquet_dir(results: Path) -> Path:
    """Where the Parquet mirror of ``results`` lives: ``x.jsonl`` -> ``x.parquet/``."""
    return results.with_suffix(".parquet")


class ParquetMirror:
    """Appends a part per committed block of lines; created after the results file is prepared."""

    def __init__(self, results: Path) -> None:
        self.results = results
        self.folder = parquet_dir(results)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pending: list[bytes] = []
        self.offset = self._reconcile()

    def _reconcile(self) -> int:
        size = self.results.stat().st_size if self.results.exists() else 0
        covered = 0
        with self.results.open("rb") as handle:
            for part in sorted(self.folder.glob("*.parquet*")):
                match = PART.fullmatch(part.name)
                if match and int(match[1]) == covered and int(match[2]) <= size and self._still_holds(
                    handle, part, int(match[2])
                ):
                    covered = int(match[2])
                else:  # a temporary file, or a part the file no longer holds (it was truncated or rewritten)
                    part.unlink()
            if covered < size:
                handle.seek(covered)
                self._write(covered, handle.read(size - covered))
        return size

    @staticmethod
    def _still_holds(handle: Any, part: Path, end: int) -> bool:
        """The file's line ending at byte ``end`` is the part's last line (ids are unique per file, so
        a rewritten file, whose lines moved, fails this)."""
        import pyarrow.parquet as pq

        ids = pq.read_table(part, columns=["id"]).column("id").to_pylist()
        if not ids:
            return False
        window = min(end, 1 << 20)
        handle.seek(end - window)
        tail = handle.read(window)
        if not tail.endswith(b"\n"):
            return False
        last = tail[:-1].rsplit(b"\n", 1)[-1]
        try:
            return str(json.loads(last)["id"]) == ids[-1]
        except (ValueError, KeyError, TypeError):
            return False

    def append(self, lines: bytes) -> None:
        """Mirror ``lines``, which were just appended to the results file (buffered until :meth:`flush`;
        lines lost with the buffer are restored from the file when the mirror is next opened)."""
        self._pending.append(lines)

    def flush(self) -> None:
        """Write the appended lines as one part."""
        if self._pending:
            lines, self._pending = b"".join(self._pending), []
            self._write(self.offset, lines)

    def _write(self, start: int, lines: bytes) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [_row(json.loads(line)) for line in lines.splitlines() if line.strip()]
        end = start + len(lines)
        self.offset = end
        if not rows:
            return
        name = f"part-{start:012d}-{end:012d}.parquet"
        tmp = self.folder / f"{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), tmp)
        os.replace(tmp, self.folder / name)


def _schema() -> Any:
    import pyarrow as pa

    text, number = pa.string(), pa.float64()
    return pa.schema([(name, number if name in ("lat", "lon") else text) for name in COLUMNS])


def _row(line: dict[str, Any]) -> dict[str, Any]:
    prediction = line.get("prediction")
    return {
        "id": str(line["id"]),
        "path": line.get("path"),
        "lat": prediction.get("lat") if isinstance(prediction, dict) else None,
        "lon": prediction.get("lon") if isinstance(prediction, dict) else None,
        "prediction": json.dumps(prediction, ensure_ascii=False) if isinstance(prediction, dict) else None,
        "error": line.get("error"),
        "error_type": line.get("error_type"),
    }
