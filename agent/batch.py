"""Batch runner: many images in flight at once, one durable JSON line per image, resumable.

Results file (JSONL), one object per image, written and fsync'd as each image completes::

    {"id": ..., "path": ..., "prediction": {<geosleuth.types.Prediction>}}
    {"id": ..., "path": ..., "error": "...", "error_type": "..."}

A prediction may itself be a failure (lat/lon null with a ``failure_reason``); ``error`` lines are
images the locate function raised on (e.g. a broken file). Each line goes out in one ``write`` so a
killed run leaves at most one partial last line; ``resume`` detects and truncates it and skips every
id already in the file, so a resumed run never writes an id twice.

The runner is generic over an async locate function ``(BatchItem) -> Prediction``: the CLI passes
``lambda item: geolocator.alocate(item.path)``, tests pass a test double.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import ValidationError

from geosleuth.errors import (
    ConfigError,
    DataFileError,
    GalleryIndexError,
    GeosleuthError,
    ModelNotAvailableError,
)
from geosleuth.types import Prediction

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jfif"}
)

# Column names accepted for the image path / id in a CSV input (matched case-insensitively).
PATH_COLUMNS = ("path", "image", "image_path", "img_path", "file", "filename", "img", "image_file")
ID_COLUMNS = ("id", "image_id", "img_id", "key", "name")

# Errors about the environment, not about one image: recording them once per image would fill the
# results file with the same failure, so they stop the run (what is written stays; --resume later).
DEFAULT_FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, ModelNotAvailableError, GalleryIndexError,
)

InputKind = Literal["folder", "csv", "list"]


@dataclass(frozen=True)
class BatchItem:
    """One image to locate: ``id`` is unique within a run and names it in the results file."""

    id: str
    path: str


@dataclass(frozen=True)
class BatchInput:
    items: list[BatchItem]
    kind: InputKind
    source: Path
    ignored_files: int = 0  # files in a folder skipped because their suffix is not an image's


@dataclass(frozen=True)
class BatchResult:
    """What happened to one image: a prediction (possibly a failed one) or an error."""

    item: BatchItem
    prediction: Prediction | None = None
    error: str | None = None
    error_type: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """A coordinate was predicted."""
        return self.prediction is not None and self.prediction.ok

    @property
    def status(self) -> Literal["ok", "no-coordinate", "error"]:
        if self.prediction is None:
            return "error"
        return "ok" if self.prediction.ok else "no-coordinate"

    def to_json_line(self) -> bytes:
        row: dict[str, Any] = {"id": self.item.id, "path": self.item.path}
        if self.prediction is not None:
            row["prediction"] = self.prediction.model_dump(mode="json")
        else:
            row["error"] = self.error or "unknown error"
            row["error_type"] = self.error_type or "Exception"
        return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


@dataclass
class BatchSummary:
    """Counts over the whole results file (``previous_*``: lines that were there before this run)."""

    out_path: Path
    total: int = 0  # images in the input
    previously_done: int = 0  # skipped because the results file already had them
    ok: int = 0  # this run: predictions with a coordinate
    no_coordinate: int = 0  # this run: predictions whose lat is None (failure_reason says why)
    errors: int = 0  # this run: images the locate function raised on
    previous_failed: int = 0  # already in the file, without a coordinate (either kind)
    truncated_partial_line: bool = False  # resume found and removed a half-written last line
    dropped_error_lines: int = 0  # retry_errors: old error lines removed to be re-run
    error_types: Counter[str] = field(default_factory=Counter)
    # this run: predictions in which a step failed (e.g. "reason": the VLM gave nothing usable)
    step_failures: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    interrupted: bool = False
    aborted: str | None = None  # why the run stopped early (a fatal, not per-image, error)

    @property
    def done_this_run(self) -> int:
        return self.ok + self.no_coordinate + self.errors

    @property
    def remaining(self) -> int:
        return self.total - self.previously_done - self.done_this_run

    @property
    def failed(self) -> int:
        """Images in the results file without a coordinate (this run and before)."""
        return self.no_coordinate + self.errors + self.previous_failed

    @property
    def images_per_s(self) -> float:
        return self.done_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, result: BatchResult) -> None:
        if result.prediction is None:
            self.errors += 1
            self.error_types[result.error_type or "Exception"] += 1
            return
        if result.prediction.ok:
            self.ok += 1
        else:
            self.no_coordinate += 1
        self.step_failures.update({failure.step for failure in result.prediction.failures})


class BatchStopped(GeosleuthError):
    """The run stopped before every image was done; ``summary`` says how far it got."""

    def __init__(self, message: str, summary: BatchSummary) -> None:
        super().__init__(message)
        self.summary = summary


class BatchInterrupted(BatchStopped):
    """Ctrl-C / cancellation: the images finished so far are in the results file."""


class BatchAborted(BatchStopped):
    """A fatal (environment, not per-image) error stopped the run."""


LocateFn = Callable[[BatchItem], Awaitable[Prediction]]
ResultCallback = Callable[[BatchResult], None]
StartCallback = Callable[[BatchSummary], None]


# ---------------------------------------------------------------------------------------------
# Inputs


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: Path) -> tuple[list[Path], int]:
    """Image files under ``folder`` (recursive, hidden files/folders skipped, sorted by relative
    path) and how many other files were ignored."""
    found: list[Path] = []
    ignored = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root, name)
            if _is_image_file(path):
                found.append(path)
            else:
                ignored += 1
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    return found, ignored


def _check_unique(items: Sequence[BatchItem], where: Sequence[str], source: Path) -> None:
    seen: dict[str, str] = {}
    for item, here in zip(items, where, strict=True):
        if item.id in seen:
            raise DataFileError(
                f"{source}: image id {item.id!r} appears twice ({seen[item.id]} and {here}); "
                "ids name results, so each must be unique: remove the duplicate or add an id column"
            )
        seen[item.id] = here


def _resolve(raw: str, base: Path) -> str:
    path = Path(raw).expanduser()
    return str(path if path.is_absolute() else base / path)


def _read_csv_input(source: Path) -> list[BatchItem]:
    try:
        with source.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{source}: cannot read as CSV ({exc})") from None
    lowered = {f.lower(): f for f in fields}
    path_col = next((lowered[c] for c in PATH_COLUMNS if c in lowered), None)
    if path_col is None:
        raise DataFileError(
            f"{source}: no image path column (looked for {', '.join(PATH_COLUMNS)}; found "
            f"{', '.join(fields) or 'no header'}); add a 'path' column with one image path per row"
        )
    id_col = next((lowered[c] for c in ID_COLUMNS if c in lowered and lowered[c] != path_col), None)
    items: list[BatchItem] = []
    where: list[str] = []
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        raw = row.get(path_col, "")
        if not raw:
            raise DataFileError(f"{source}, line {line}: empty {path_col!r}; every row needs an image path")
        image_id = (row.get(id_col, "") if id_col else "") or raw
        items.append(BatchItem(image_id, _resolve(raw, source.parent)))
        where.append(f"line {line}")
    _check_unique(items, where, source)
    return items


def _read_list_input(source: Path) -> list[BatchItem]:
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{source}: cannot read the list of images ({exc})") from None
    items: list[BatchItem] = []
    where: list[str] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        items.append(BatchItem(raw, _resolve(raw, source.parent)))
        where.append(f"line {line}")
    _check_unique(items, where, source)
    return items


def read_batch_input(source: str | os.PathLike[str]) -> BatchInput:
    """The images named by ``source``: a folder (searched recursively, ids = relative paths), a CSV
    (a path column and an optional id column) or a list file (one path per line, ``#`` comments).

    Relative paths in a CSV or list file are relative to that file's folder.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files, ignored = find_images(path)
        items = [BatchItem(f.relative_to(path).as_posix(), str(f)) for f in files]
        kind: InputKind = "folder"
    elif path.is_file():
        if path.suffix.lower() in (".csv", ".tsv"):
            items, ignored, kind = _read_csv_input(path), 0, "csv"
        elif _is_image_file(path):
            raise DataFileError(
                f"{path} is an image, not a batch input; use `geosleuth locate {path}` for one image, "
                "or give a folder, a CSV or a list file"
            )
        else:
            items, ignored, kind = _read_list_input(path), 0, "list"
    else:
        raise DataFileError(f"{path} does not exist; give a folder of images, a CSV or a list file")
    if not items:
        raise DataFileError(
            f"{path}: no images found"
            + (f" ({ignored} other files ignored; image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
               if ignored else "")
        )
    return BatchInput(items, kind, path, ignored)


# ---------------------------------------------------------------------------------------------
# The results file


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


def _parse_line(raw: bytes, line: int, source: Path) -> ResultRecord:
    where = f"{source}, line {line}"
    row = _json_row(raw, where)
    prediction = None
    if isinstance(row.get("prediction"), dict):
        try:
            prediction = Prediction.model_validate(row["prediction"])
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise DataFileError(f"{where}: \"prediction\" is not a valid Prediction ({problem})") from None
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


@dataclass(frozen=True)
class _DoneEntry:
    """What resuming needs of one line (parsed, not validated: resuming 100k images stays quick)."""

    id: str
    line: int
    ok: bool
    error: bool


def _scan_done(source: Path) -> tuple[list[_DoneEntry], int, bool]:
    entries: list[_DoneEntry] = []

    def handle(number: int, raw: bytes) -> None:
        row = _json_row(raw, f"{source}, line {number}")
        prediction = row.get("prediction")
        is_error = not isinstance(prediction, dict)
        located = not is_error and prediction.get("lat") is not None
        entries.append(_DoneEntry(str(row["id"]), number, located, is_error))

    valid, partial = _each_line(source, handle)
    return entries, valid, partial


def read_results(path: str | os.PathLike[str]) -> list[ResultRecord]:
    """The complete records of a results file (a half-written last line is left out)."""
    source = Path(path)
    if not source.is_file():
        raise DataFileError(f"{source}: results file does not exist; run `geosleuth batch` first")
    records = scan_results(source).records
    if not records:
        raise DataFileError(f"{source}: no results in the file")
    return records


class _ResultsWriter:
    """Appends one line per result: a single write, then fsync, so a completed image is on disk
    before it is counted. Holds an exclusive lock (taken before the file is inspected) so two runs
    cannot interleave or truncate each other's lines."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
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
        view = memoryview(line)
        while view:  # unbuffered writes may be short; finish the line before anything else
            view = view[self._handle.write(view) or 0:]
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _rewrite_without(path: Path, drop: set[int]) -> None:
    """Atomically replace the results file with its complete lines minus line numbers ``drop``."""
    tmp = path.with_name(f".{path.name}.rewrite")
    with tmp.open("wb") as out:
        _each_line(path, lambda number, raw: None if number in drop else out.write(raw))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _prepare_output(
    writer: _ResultsWriter, items: Sequence[BatchItem], summary: BatchSummary, *, resume: bool,
    overwrite: bool, retry_errors: bool,
) -> set[str]:
    """Make the (locked) results file ready for appending; return the ids already done."""
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
    if retry_errors:
        dropped = {e.line for e in entries if e.error and e.id in wanted}
        if dropped:
            _rewrite_without(out, dropped)
            writer.reopen()
            summary.dropped_error_lines = len(dropped)
            entries = [e for e in entries if e.line not in dropped]
    done: set[str] = set()
    for entry in entries:
        if entry.id in done:
            raise DataFileError(
                f"{out}, line {entry.line}: id {entry.id!r} is already in the file; "
                "keep one line per image before resuming"
            )
        done.add(entry.id)
        if entry.id in wanted and not entry.ok:
            summary.previous_failed += 1
    summary.previously_done = len(done & wanted)
    return done


# ---------------------------------------------------------------------------------------------
# Running


async def _locate_one(
    item: BatchItem, locate_fn: LocateFn, fatal: tuple[type[BaseException], ...]
) -> BatchResult:
    started = time.perf_counter()
    try:
        prediction = await locate_fn(item)
    except fatal:
        raise
    except Exception as exc:  # one image's failure is recorded, never fatal to the run
        message = str(exc) or repr(exc)
        return BatchResult(item, None, message, type(exc).__name__, time.perf_counter() - started)
    if not isinstance(prediction, Prediction):
        kind = type(prediction).__name__
        raise TypeError(f"locate function returned {kind} for {item.path!r}, not a Prediction")
    return BatchResult(item, prediction, None, None, time.perf_counter() - started)


async def arun_batch(
    items: Iterable[BatchItem],
    locate_fn: LocateFn,
    out_path: str | os.PathLike[str],
    *,
    resume: bool = False,
    concurrency: int = 8,
    on_result: ResultCallback | None = None,
    on_start: StartCallback | None = None,
    overwrite: bool = False,
    retry_errors: bool = False,
    fsync: bool = True,
    fatal_errors: tuple[type[BaseException], ...] = DEFAULT_FATAL_ERRORS,
    summary: BatchSummary | None = None,
) -> BatchSummary:
    """Locate every item not yet in ``out_path`` with up to ``concurrency`` calls in flight; see
    :func:`run_batch`. Raises :class:`BatchInterrupted` when cancelled, :class:`BatchAborted` on a
    ``fatal_errors`` exception; lines written before either stay in the file."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    item_list = list(items)
    _check_unique(item_list, [f"item {i}" for i in range(len(item_list))], Path("batch input"))
    out = Path(out_path)
    summary = summary if summary is not None else BatchSummary(out)
    summary.out_path, summary.total = out, len(item_list)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _ResultsWriter(out, fsync=fsync)
    workers: list[asyncio.Future[None]] = []
    started = time.perf_counter()
    try:
        done = _prepare_output(
            writer, item_list, summary, resume=resume, overwrite=overwrite, retry_errors=retry_errors
        )
        pending = [item for item in item_list if item.id not in done]
        todo: Iterator[BatchItem] = iter(pending)
        if on_start is not None:
            on_start(summary)
        started = time.perf_counter()

        async def worker() -> None:
            # Workers share one iterator: next() never awaits, so each item goes to exactly one worker.
            for item in todo:
                result = await _locate_one(item, locate_fn, fatal_errors)
                writer.write(result.to_json_line())
                summary.add(result)
                if on_result is not None:
                    on_result(result)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(pending)))]
        await asyncio.gather(*workers)
    except asyncio.CancelledError:
        summary.interrupted = True
        raise
    except fatal_errors as exc:
        summary.aborted = f"{type(exc).__name__}: {exc}"
        raise BatchAborted(
            f"batch stopped: {exc}. {summary.done_this_run} image(s) finished this run are in {out}; "
            "fix the problem and re-run with --resume",
            summary,
        ) from exc
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        summary.elapsed_s = time.perf_counter() - started
        writer.close()
    return summary


def run_batch(
    items: Iterable[BatchItem],
    locate_fn: LocateFn,
    out_path: str | os.PathLike[str],
    **options: Any,
) -> BatchSummary:
    """Locate ``items`` with ``locate_fn``, appending one JSON line per image to ``out_path``.

    - ``resume``: skip ids already in the file (a half-written last line is truncated first);
      without it an existing non-empty file is an error unless ``overwrite``.
    - ``retry_errors`` (with ``resume``): error lines are removed and those images run again.
    - ``concurrency``: locate calls in flight at once (keep a VLM server's batch full).
    - ``on_start(summary)`` once the plan is known; ``on_result(result)`` after each line is on disk.
    - An exception from ``locate_fn`` is recorded as that image's error line, except ``fatal_errors``,
      which stop the run (:class:`BatchAborted`). Ctrl-C raises :class:`BatchInterrupted`.
    Both carry the summary; finished lines are never lost.

    ``options`` are the keyword arguments of :func:`arun_batch` (same names and defaults: ``resume``,
    ``concurrency``, ``on_result``, ``on_start``, ``overwrite``, ``retry_errors``, ``fsync``,
    ``fatal_errors``), except ``summary``.
    """
    if "summary" in options:
        raise TypeError("run_batch() got an unexpected keyword argument 'summary'")
    summary = BatchSummary(Path(out_path))
    try:
        return asyncio.run(arun_batch(items, locate_fn, out_path, summary=summary, **options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        summary.interrupted = True
        raise BatchInterrupted(
            f"interrupted: {summary.done_this_run} image(s) finished this run are in {out_path}; "
            "re-run with --resume to do the rest",
            summary,
        ) from None


# ---------------------------------------------------------------------------------------------
# For other engines (agent/batch_ray.py): the same results file rules, without the asyncio loop.


async def locate_one(
    item: BatchItem, locate_fn: LocateFn, fatal: tuple[type[BaseException], ...] = DEFAULT_FATAL_ERRORS
) -> BatchResult:
    """One image through ``locate_fn``: a prediction, or the error recorded as that image's result
    (``fatal`` exceptions propagate)."""
    return await _locate_one(item, locate_fn, fatal)


@contextmanager
def open_results(
    out_path: str | os.PathLike[str], items: Sequence[BatchItem], summary: BatchSummary, *, resume: bool = False,
    overwrite: bool = False, retry_errors: bool = False, fsync: bool = True,
) -> Iterator[tuple[Callable[[bytes], None], set[str]]]:
    """Lock and prepare the results file as :func:`arun_batch` does (resume, overwrite, retry_errors);
    yield ``(write, done_ids)``: ``write(lines)`` appends complete lines in one write (+ fsync)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _ResultsWriter(out, fsync=fsync)
    try:
        done = _prepare_output(
            writer, items, summary, resume=resume, overwrite=overwrite, retry_errors=retry_errors
        )
        yield writer.write, done
    finally:
        writer.close()
