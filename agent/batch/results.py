"""The results file: one durable JSON line per image, how to read it back, and how to resume it.

Results file (JSONL), one object per image::

    {"id": ..., "path": ..., "prediction": {<geosleuth.types.Prediction>}}
    {"id": ..., "path": ..., "error": "...", "error_type": "..."}

A prediction carries its ``status`` (ok / degraded / failed); ``error`` lines are images the locate
function raised on (e.g. a broken file). Each line goes out in one ``write`` followed by ``fsync``,
so a killed run leaves at most one partial last line; :func:`prepare_output` detects and truncates
it and returns every id already in the file, so a resumed run never writes an id twice.

Plain blocking file code, no event loop: the local (asyncio) engine calls the writer from a worker
thread, other engines call it directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from geosleuth.errors import DataFileError
from geosleuth.types import Prediction

from .inputs import BatchItem
from .summary import BatchSummary

# What a line of a results file is: a prediction's status, or "error" (the locate call raised).
LINE_STATUSES = ("ok", "degraded", "failed", "error")


@dataclass(frozen=True)
class BatchResult:
    """What happened to one image: a prediction (possibly a failed or degraded one) or an error."""

    item: BatchItem
    prediction: Prediction | None = None
    error: str | None = None
    error_type: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """A coordinate was predicted (degraded or not)."""
        return self.prediction is not None and self.prediction.ok

    @property
    def status(self) -> str:
        """One of :data:`LINE_STATUSES`."""
        return "error" if self.prediction is None else self.prediction.status.value

    def to_json_line(self) -> bytes:
        row: dict[str, Any] = {"id": self.item.id, "path": self.item.path}
        if self.prediction is not None:
            row["prediction"] = self.prediction.model_dump(mode="json")
        else:
            row["error"] = self.error or "unknown error"
            row["error_type"] = self.error_type or "Exception"
        return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


@dataclass(frozen=True)
class ResultRecord:
    """One line of a results file, parsed."""

    id: str
    path: str | None
    prediction: Prediction | None
    error: str | None
    error_type: str | None
    line: int

    @property
    def ok(self) -> bool:
        return self.prediction is not None and self.prediction.ok

    @property
    def status(self) -> str:
        """One of :data:`LINE_STATUSES`."""
        return "error" if self.prediction is None else self.prediction.status.value


@dataclass
class ResultsScan:
    records: list[ResultRecord]
    valid_bytes: int  # length of the file up to the end of the last complete line
    partial_tail: bool  # the file ends in a half-written line (a killed run)


def _json_row(raw: bytes, where: str) -> dict[str, Any]:
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFileError(
            f"{where}: not valid JSON ({exc}); only the last line of a results file can be cut off by "
            "a killed run; fix or delete this line"
        ) from None
    if not isinstance(row, dict) or not isinstance(row.get("id"), str | int):
        raise DataFileError(
            f"{where}: expected a JSON object with an \"id\"; is this a geosleuth results file?"
        )
    if not isinstance(row.get("prediction"), dict) and "error" not in row:
        raise DataFileError(f"{where}: has neither a \"prediction\" object nor an \"error\"")
    return row


def _prediction(row: dict[str, Any], where: str) -> Prediction:
    try:
        return Prediction.model_validate(row["prediction"])
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise DataFileError(f"{where}: \"prediction\" is not a valid Prediction ({problem})") from None


def _parse_line(raw: bytes, line: int, source: Path) -> ResultRecord:
    where = f"{source}, line {line}"
    row = _json_row(raw, where)
    prediction = _prediction(row, where) if isinstance(row.get("prediction"), dict) else None
    return ResultRecord(
        id=str(row["id"]),
        path=row.get("path"),
        prediction=prediction,
        error=None if prediction is not None else str(row.get("error") or "error"),
        error_type=None if prediction is not None else row.get("error_type"),
        line=line,
    )


def _each_line(source: Path, handle: Callable[[int, bytes], None]) -> tuple[int, bool]:
    """Call ``handle(line_number, raw)`` for every complete non-empty line, streaming; return the
    byte length up to the end of the last complete line and whether a half-written line follows."""
    valid = 0
    try:
        with source.open("rb") as stream:
            for number, raw in enumerate(stream, start=1):
                if not raw.endswith(b"\n"):
                    return valid, bool(raw.strip())
                valid += len(raw)
                if raw.strip():
                    handle(number, raw)
    except FileNotFoundError:
        return 0, False
    except OSError as exc:
        raise DataFileError(f"{source}: cannot read results file ({exc})") from None
    return valid, False


def scan_results(path: str | os.PathLike[str]) -> ResultsScan:
    """Parse a results file (every prediction validated). A last line without its newline is a
    killed run's half-written line: reported (``partial_tail``), never parsed. Any other bad line
    is an error naming it."""
    source = Path(path)
    records: list[ResultRecord] = []
    valid, partial = _each_line(source, lambda number, raw: records.append(_parse_line(raw, number, source)))
    return ResultsScan(records, valid, partial)


def read_results(path: str | os.PathLike[str]) -> list[ResultRecord]:
    """The complete records of a results file (a half-written last line is left out)."""
    source = Path(path)
    if not source.is_file():
        raise DataFileError(f"{source}: results file does not exist; run `geosleuth batch` first")
    records = scan_results(source).records
    if not records:
        raise DataFileError(f"{source}: no results in the file")
    return records


@dataclass(frozen=True)
class _DoneEntry:
    """What resuming needs of one line (parsed; validated only when it predates statuses)."""

    id: str
    line: int
    status: str  # one of LINE_STATUSES


def _line_status(row: dict[str, Any], where: str) -> str:
    prediction = row.get("prediction")
    if not isinstance(prediction, dict):
        return "error"
    if prediction.get("lat") is None:
        return "failed"
    status = prediction.get("status")
    if status in LINE_STATUSES:
        return str(status)
    return _prediction(row, where).status.value  # an older schema: let the model read it


def _scan_done(source: Path) -> tuple[list[_DoneEntry], int, bool]:
    entries: list[_DoneEntry] = []

    def handle(number: int, raw: bytes) -> None:
        where = f"{source}, line {number}"
        row = _json_row(raw, where)
        entries.append(_DoneEntry(str(row["id"]), number, _line_status(row, where)))

    valid, partial = _each_line(source, handle)
    return entries, valid, partial


class ResultsWriter:
    """Appends one line per result: a single write, then fsync, so a completed image is on disk
    before it is counted. Holds an exclusive lock (taken before the file is inspected) so two runs
    cannot interleave or truncate each other's lines. Blocking: call it off an event loop's thread."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._handle: BinaryIO = self._open_locked()

    def _open_locked(self) -> BinaryIO:
        handle: BinaryIO = self.path.open("ab", buffering=0)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock there
            return handle
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise DataFileError(
                f"{self.path} is being written by another geosleuth batch run; "
                "wait for it to finish or choose another --out"
            ) from None
        return handle

    def truncate(self, size: int) -> None:
        os.ftruncate(self._handle.fileno(), size)
        os.fsync(self._handle.fileno())

    def reopen(self) -> None:
        """After the file was replaced on disk: append to (and lock) the new one."""
        self._handle.close()
        self._handle = self._open_locked()

    def write(self, line: bytes) -> None:
        """Append ``line`` and (with ``fsync``) make it durable before returning."""
        view = memoryview(line)
        while view:  # unbuffered writes may be short; finish the line before anything else
            view = view[self._handle.write(view) or 0:]
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _rewrite_without(path: Path, drop: set[int]) -> None:
    """Atomically replace the results file with its complete lines minus line numbers ``drop``."""
    from geosleuth.fileio import atomic_writer

    with atomic_writer(path, binary=True) as out:
        _each_line(path, lambda number, raw: None if number in drop else out.write(raw))


def prepare_output(
    writer: ResultsWriter, items: Sequence[BatchItem], summary: BatchSummary, *, resume: bool,
    overwrite: bool, retry: Collection[str] = (),
) -> set[str]:
    """Make the (locked) results file ready for appending; return the ids already done.

    ``retry`` (with ``resume``): line statuses (``"error"``, ``"degraded"``, ...) whose lines are
    removed so those images run again.
    """
    out = writer.path
    if out.stat().st_size == 0:
        return set()
    if not resume:
        if not overwrite:
            raise DataFileError(
                f"{out} already has results; use --resume to continue that run (done images are "
                "skipped) or --overwrite to start again"
            )
        writer.truncate(0)
        return set()
    entries, valid_bytes, partial = _scan_done(out)
    if partial:
        writer.truncate(valid_bytes)
        summary.truncated_partial_line = True
    wanted = {item.id for item in items}
    dropped = [e for e in entries if e.status in retry and e.id in wanted]
    if dropped:
        _rewrite_without(out, {e.line for e in dropped})
        writer.reopen()
        summary.retried.update(e.status for e in dropped)
        entries = [e for e in entries if not (e.status in retry and e.id in wanted)]
    done: set[str] = set()
    for entry in entries:
        if entry.id in done:
            raise DataFileError(
                f"{out}, line {entry.line}: id {entry.id!r} is already in the file; "
                "keep one line per image before resuming"
            )
        done.add(entry.id)
        if entry.id in wanted:
            summary.previous[entry.status] += 1
    summary.previously_done = len(done & wanted)
    return done


@contextmanager
def open_results(
    out_path: str | os.PathLike[str], items: Sequence[BatchItem], summary: BatchSummary, *, resume: bool = False,
    overwrite: bool = False, retry_errors: bool = False, retry_degraded: bool = False, fsync: bool = True,
) -> Iterator[tuple[Callable[[bytes], None], set[str]]]:
    """Lock and prepare the results file as every engine does (resume, overwrite, retries); yield
    ``(write, done_ids)``: ``write(lines)`` appends complete lines in one write (+ fsync), blocking."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(out, fsync=fsync)
    retry = {status for status, wanted in (("error", retry_errors), ("degraded", retry_degraded)) if wanted}
    try:
        yield writer.write, prepare_output(writer, items, summary, resume=resume, overwrite=overwrite, retry=retry)
    finally:
        writer.close()
