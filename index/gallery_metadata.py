"""A gallery store's ``metadata.sqlite``: one row per FAISS id, and the inputs the build left out.

Tables: ``items(row, id, lat, lon, author, metadata JSON)`` (``row`` = FAISS id) and
``failures(source, reason)``. Opened read-only; :func:`place_from_metadata` turns MP16-Pro-style
metadata into a :class:`~geosleuth.types.Place`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from geosleuth.errors import GalleryIndexError
from geosleuth.index.manifest import BuildFailure
from geosleuth.types import GalleryNeighbor, MetadataValue, Place

# SQLite's default limit on parameters per statement is 999; stay well below it.
_SQL_CHUNK = 500

# Metadata keys that make up a place hierarchy (MP16-Pro column names, lower-cased).
_PLACE_KEYS = {
    "continent": "continent",
    "country_code": "country_code",
    "country": "country",
    "state": "admin1",
    "county": "admin2",
    "city": "city",
}


class GalleryMetadata:
    """The read-only metadata of the store at ``store_path``. Thread-safe: the connection is
    guarded by a lock. Use :meth:`open`; close with :meth:`close`."""

    def __init__(self, store_path: Path, db: sqlite3.Connection, count: int) -> None:
        self.store_path = store_path
        self.count = count  # rows in ``items``
        self._db = db
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store_path: Path, db_file: Path) -> GalleryMetadata:
        try:
            db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, check_same_thread=False)
            (rows,) = db.execute("SELECT COUNT(*) FROM items").fetchone()
        except sqlite3.Error as exc:
            raise GalleryIndexError(
                f"cannot read gallery metadata {str(db_file)!r} ({exc}); rebuild the store"
            ) from None
        return cls(store_path, db, rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def excluded_rows(self, ids: list[str], authors: list[str]) -> set[int]:
        """The rows of the given image ids and of every image by the given authors."""
        rows: set[int] = set()
        with self._lock:
            for column, values in (("id", ids), ("author", authors)):
                values = [str(v) for v in dict.fromkeys(values) if v is not None and str(v) != ""]
                for start in range(0, len(values), _SQL_CHUNK):
                    chunk = values[start : start + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT row FROM items WHERE {column} IN ({marks})"
                    rows.update(r for (r,) in self._db.execute(sql, chunk))
        return rows

    def records(self, rows: list[int]) -> dict[int, tuple[Any, ...]]:
        """``(row, id, lat, lon, author, metadata JSON)`` by row; GalleryIndexError when one is missing."""
        out: dict[int, tuple[Any, ...]] = {}
        with self._lock:
            for start in range(0, len(rows), _SQL_CHUNK):
                chunk = rows[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                for rec in self._db.execute(
                    f"SELECT row, id, lat, lon, author, metadata FROM items WHERE row IN ({marks})", chunk
                ):
                    out[rec[0]] = rec
        missing = set(rows) - set(out)
        if missing:
            raise GalleryIndexError(
                f"gallery store {str(self.store_path)!r}: index rows {sorted(missing)[:5]} have no metadata; "
                "rebuild the store"
            )
        return out

    def failures(self, limit: int | None = None) -> list[BuildFailure]:
        """Inputs left out of the gallery at build time, with the reason."""
        sql = "SELECT source, reason FROM failures ORDER BY rowid"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (limit,)
        with self._lock:
            return [BuildFailure(s, r) for s, r in self._db.execute(sql, args)]


def neighbor_from_record(record: tuple[Any, ...], similarity: float) -> GalleryNeighbor:
    """A search hit: the record's image, its metadata (author included) and place."""
    _, item_id, lat, lon, author, meta_json = record
    metadata: dict[str, MetadataValue] = json.loads(meta_json) if meta_json else {}
    if author is not None:
        metadata.setdefault("author", author)
    return GalleryNeighbor(
        id=item_id, lat=lat, lon=lon, similarity=similarity, metadata=metadata, place=place_from_metadata(metadata)
    )


def place_from_metadata(metadata: dict[str, MetadataValue]) -> Place | None:
    """A Place from MP16-Pro-style metadata (country/state/county/city...), or None when the
    metadata names no country (the retrieve stage then reverse-geocodes the coordinate)."""
    values = {
        field: str(metadata[key]) for key, field in _PLACE_KEYS.items()
        if metadata.get(key) not in (None, "")
    }
    if "country" not in values and "country_code" not in values:
        return None
    if "country_code" in values:
        values["country_code"] = values["country_code"].upper()
    return Place(**values)
