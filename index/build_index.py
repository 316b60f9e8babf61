"""The gallery build's index phase: train the FAISS index, fill it, write the store's files.

Embeddings come in chunks, in source order (:class:`Chunks`: the encode phase's shards, or
precomputed embeddings memory-mapped): a training sample is drawn (seeded), the index is trained
and filled, and ``index.faiss`` and ``metadata.sqlite`` are written under temporary names and
renamed; the caller writes ``manifest.json`` last. Not checkpointed: it is quick next to encoding,
and reruns from the shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from geosleuth.errors import GalleryIndexError
from geosleuth.index.faiss_index import IndexSpec, create_index
from geosleuth.index.manifest import (
    INDEX_FILE,
    METADATA_FILE,
    BuildFailure,
    EncoderIdentity,
    EncoderRecord,
    StoreManifest,
)
from geosleuth.index.sources import EmbeddingsSource, GallerySource, metadata_records

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class IndexChunk:
    """A slice of the gallery's usable embeddings."""

    positions: np.ndarray  # item positions in the source table, int64
    vectors: np.ndarray  # (n, D) float32, unit rows
    lat: np.ndarray
    lon: np.ndarray


class Chunks(Protocol):
    """Usable embeddings in source order; unusable inputs in ``failures`` (complete once iterated)."""

    failures: list[BuildFailure]

    def counts(self) -> list[int]:
        """Usable embeddings per chunk."""
        ...

    def __iter__(self) -> Iterator[IndexChunk]: ...


class EmbeddingChunks:
    """Precomputed embeddings, memory-mapped, in slices; unusable rows become failures."""

    def __init__(self, source: EmbeddingsSource, items: pd.DataFrame, chunk_size: int) -> None:
        self.array = source.array()
        self.path = str(source.embeddings_path)
        self.lat = items["lat"].to_numpy()
        self.lon = items["lon"].to_numpy()
        self.ids = items["id"].tolist()
        self.chunk_size = max(chunk_size, 65536)
        self.failures: list[BuildFailure] = []
        self._checked = False

    def counts(self) -> list[int]:
        return [len(c.positions) for c in self]  # also records the unusable rows as failures

    def __iter__(self) -> Iterator[IndexChunk]:
        for start in range(0, len(self.array), self.chunk_size):
            block = np.asarray(self.array[start : start + self.chunk_size], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1)
            ok = np.isfinite(block).all(axis=1) & (norms > 0)
            positions = np.arange(start, start + len(block))
            if not self._checked:
                for p in positions[~ok]:
                    self.failures.append(
                        BuildFailure(f"{self.path} row {p + 1} (id {self.ids[p]})", "embedding is zero or not finite")
                    )
            yield IndexChunk(positions[ok], unit_rows(block[ok]), self.lat[positions[ok]], self.lon[positions[ok]])
        self._checked = True


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (the caller has dropped zero rows)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def index_and_write(
    root: Path,
    identity: EncoderIdentity,
    spec: IndexSpec,
    items: pd.DataFrame,
    chunks: Chunks,
    source: GallerySource,
    plan: dict[str, Any],
    *,
    on_train: Callable[[int, int], None],
    on_index: Callable[[int, int], None],
) -> StoreManifest:
    """Build the index over ``chunks`` and write ``index.faiss`` and ``metadata.sqlite`` into ``root``;
    the manifest to write last. ``on_train(done, total)`` / ``on_index(done, total)``: progress."""
    import faiss

    counts = chunks.counts()
    count = sum(counts)
    if count == 0:
        first = chunks.failures[0] if chunks.failures else None
        hint = f" (first: {first.source}: {first.reason})" if first else ""
        raise GalleryIndexError(f"no usable images in {source.describe()['path']}: all {len(items)} failed{hint}")
    params = spec.resolve(count, identity.dim)
    index = create_index(spec.index_type, identity.dim, {**params, "seed": spec.seed})
    if not index.is_trained:
        on_train(0, 1)
        index.train(_training_sample(chunks, counts, int(params["train_size"]), spec.seed))
        on_train(1, 1)
    if spec.index_type == "hnsw-sq":
        index.hnsw.efSearch = int(params["ef_search"])

    db_tmp = root / (METADATA_FILE + ".tmp")
    db_tmp.unlink(missing_ok=True)
    db = _create_metadata_db(db_tmp)
    added = 0
    on_index(0, count)
    try:
        for chunk in chunks:
            if len(chunk.positions) == 0:
                continue
            index.add(chunk.vectors)
            _insert_items(db, added, items.iloc[chunk.positions], chunk.lat, chunk.lon)
            added += len(chunk.positions)
            on_index(added, count)
        db.executemany(
            "INSERT INTO failures(source, reason) VALUES (?, ?)", [(f.source, f.reason) for f in chunks.failures]
        )
        db.execute("CREATE INDEX items_author ON items(author)")
        db.commit()
    finally:
        db.close()
    if index.ntotal != count:  # pragma: no cover - would be a bug in this module
        raise GalleryIndexError(f"internal error: indexed {index.ntotal} vectors, expected {count}")

    index_tmp = root / (INDEX_FILE + ".tmp")
    faiss.write_index(index, str(index_tmp))
    os.replace(index_tmp, root / INDEX_FILE)
    os.replace(db_tmp, root / METADATA_FILE)
    return StoreManifest(
        encoder=EncoderRecord(name=identity.name, model_id=identity.model_id, weights_hash=identity.weights_hash),
        dim=identity.dim,
        index_type=spec.index_type,
        index_params=params,
        count=count,
        failures=len(chunks.failures),
        source={**source.describe(), "fingerprint": plan["fingerprint"]},
        build={
            "shard_size": plan["shard_size"],
            "seed": spec.seed,
            "faiss_version": faiss.__version__,
            "geosleuth_version": _version(),
            "index_bytes": (root / INDEX_FILE).stat().st_size,
        },
    )


def _training_sample(chunks: Chunks, counts: list[int], size: int, seed: int) -> np.ndarray:
    """``size`` vectors drawn uniformly (seeded) from all usable vectors, gathered chunk by chunk."""
    total = sum(counts)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))
    parts = []
    offset = 0
    for chunk, n in zip(chunks, counts, strict=True):
        lo, hi = np.searchsorted(chosen, [offset, offset + n])
        if hi > lo:
            parts.append(chunk.vectors[chosen[lo:hi] - offset])
        offset += n
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _create_metadata_db(path: Path) -> Any:
    import sqlite3

    db = sqlite3.connect(path)
    # Crash safety comes from writing a temporary file and renaming it, not from the journal.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute(
        "CREATE TABLE items (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, lat REAL NOT NULL, "
        "lon REAL NOT NULL, author TEXT, metadata TEXT NOT NULL)"
    )
    db.execute("CREATE TABLE failures (source TEXT NOT NULL, reason TEXT NOT NULL)")
    return db


def _insert_items(db: Any, first_row: int, rows: pd.DataFrame, lat: np.ndarray, lon: np.ndarray) -> None:
    metadata = metadata_records(rows)
    db.executemany(
        "INSERT INTO items(row, id, lat, lon, author, metadata) VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                first_row + i, str(item_id), float(la), float(lo), author if isinstance(author, str) else None,
                json.dumps(meta, ensure_ascii=False),
            )
            for i, (item_id, author, la, lo, meta) in enumerate(
                zip(rows["id"].tolist(), rows["author"].tolist(), lat, lon, metadata, strict=True)
            )
        ),
    )


def _version() -> str:
    from geosleuth import __version__

    return __version__
