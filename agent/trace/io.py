"""Reading trace files: one trace JSON, a list of them, a JSONL of traces (or of ``{"id", "trace"}``
lines), or a folder of trace files; picking one trace by id; naming one image's trace file."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geosleuth.errors import DataFileError
from geosleuth.types import Trace


def trace_file_name(image_id: str) -> str:
    """A file name for an image id (``sub/a.jpg`` -> ``sub_a.jpg-<hash>.json``); distinct ids never
    share one, because a hash is added whenever the id had to be changed."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._") or "image"
    if safe != image_id:
        safe = f"{safe[:100]}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"
    return f"{safe}.json"


@dataclass(frozen=True)
class LoadedTrace:
    trace: Trace
    key: str  # the id it is selected by: the results/trace line's "id", else the trace id


def _trace_from(obj: Any, where: str) -> LoadedTrace:
    if isinstance(obj, dict) and isinstance(obj.get("trace"), dict):
        key, body = str(obj.get("id") or ""), obj["trace"]
    else:
        key, body = "", obj
    if isinstance(body, dict) and "prediction" in body and "trace_id" not in body:
        raise DataFileError(
            f"{where}: this is a batch result (a prediction), not a trace; write traces with "
            "`geosleuth batch ... --trace-dir DIR` or `geosleuth locate ... --trace FILE`"
        )
    try:
        trace = Trace.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "trace"
        raise DataFileError(f"{where}: not a geosleuth trace ({loc}: {first['msg']})") from None
    return LoadedTrace(trace, key or trace.trace_id)


def load_traces(path: str | os.PathLike[str]) -> list[LoadedTrace]:
    """Traces from a JSON file (one trace, or a list), a JSONL file (one trace per line, or
    ``{"id": ..., "trace": {...}}`` lines) or a folder of trace JSON files. A killed run's
    half-written last line is skipped."""
    source = Path(path)
    if source.is_dir():  # e.g. `geosleuth batch --trace-dir DIR`: one trace JSON per image
        files = sorted(source.rglob("*.json"))
        if not files:
            raise DataFileError(f"{source}: no trace files (*.json) in this folder")
        return [loaded for file in files for loaded in load_traces(file)]
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataFileError(f"{source}: trace file does not exist; write one with --trace or --trace-dir") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{source}: cannot read trace file ({exc})") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        traces = [_trace_from(obj, f"{source}, item {i}") for i, obj in enumerate(whole)]
    elif isinstance(whole, dict):
        traces = [_trace_from(whole, str(source))]
    else:
        traces = []
        rows = text.splitlines()
        complete = rows if text.endswith("\n") else rows[:-1]
        for number, row in enumerate(complete, start=1):
            if not row.strip():
                continue
            try:
                obj = json.loads(row)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{source}, line {number}: not valid JSON ({exc.msg})") from None
            traces.append(_trace_from(obj, f"{source}, line {number}"))
    if not traces:
        raise DataFileError(f"{source}: no traces in the file")
    return traces


def select_trace(traces: Sequence[LoadedTrace], wanted: str | None, source: str = "the file") -> LoadedTrace:
    """The trace whose id, trace id or image path is ``wanted``; the only one when ``wanted`` is None."""
    if wanted is None:
        if len(traces) == 1:
            return traces[0]
        shown = ", ".join(t.key for t in traces[:5]) + (", ..." if len(traces) > 5 else "")
        raise DataFileError(f"{source} holds {len(traces)} traces; choose one with --id (e.g. {shown})")
    for loaded in traces:
        if wanted in (loaded.key, loaded.trace.trace_id, loaded.trace.image.path):
            return loaded
    raise DataFileError(f"{source}: no trace with id {wanted!r}; ids: {', '.join(t.key for t in traces[:10])}")
