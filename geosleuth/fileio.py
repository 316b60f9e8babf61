"""Atomic file writes: the one helper every module uses to replace a file.

The content goes to a temporary file in the same folder, is flushed and fsync'd, and is renamed over
the target, so a reader (or a run killed half-way) sees the old file or the new one, never half of
one. The temporary file is removed when writing fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, binary: bool = False, newline: str | None = None
) -> Iterator[IO[Any]]:
    """``with atomic_writer(path) as handle: handle.write(...)`` replaces ``path`` when the block ends
    without an exception (text: UTF-8; ``binary=True`` for bytes). Parent folders are created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        mode = "wb" if binary else "w"
        kwargs: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), atomically."""
    with atomic_writer(path) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data``, atomically."""
    with atomic_writer(path, binary=True) as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike[str], data: Any, **dumps_options: Any) -> None:
    """Replace ``path`` with ``data`` as indented JSON and a final newline (``dumps_options`` go to
    :func:`json.dumps`, e.g. ``sort_keys=True``), atomically."""
    options = {"indent": 2, "ensure_ascii": False, **dumps_options}
    atomic_write_text(path, json.dumps(data, **options) + "\n")
