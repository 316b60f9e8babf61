"""The image-gallery store: a folder holding a FAISS index, per-image metadata and a manifest.

Layout of a store folder::

    manifest.json     what the index is (encoder id + weights hash, dim, metric, index type and
                      parameters, count, source, build parameters, creation time). Written last:
                      a folder without it is an unfinished build.
    index.faiss       the FAISS index; FAISS id = row number in ``metadata.sqlite``
    metadata.sqlite   ``items(row, id, lat, lon, author, metadata JSON)`` and
                      ``failures(source, reason)`` (images that could not be used, and why)
    build/            the resumable build's work area (see :mod:`geosleuth.index.build`)

Similarity is the inner product of L2-normalised embeddings (cosine). Index types:

- ``flat``: exact search, 4 bytes per dimension per image (3 KB at 768-d). The default; right for
  galleries up to a few hundred thousand images.
- ``ivfsq``: inverted lists (``nlist`` k-means cells) holding each vector's residual from its cell
  centre as 4-bit scalar codes (ranges from mean +- 3 std); about 0.53 bytes per dimension (~410 B
  at 768-d). The choice for MP16-scale galleries (bench/bench_index_scale.py measures it).
- ``ivfpq``: inverted lists with 4-bit product-quantisation codes (fast-scan), d/8 bytes per image
  (~110 B at 768-d): the smallest, with the lowest recall.
- ``hnsw-sq``: an HNSW graph over 8-bit scalar codes, about d + 8*M bytes (~1 KB at 768-d): fast
  queries and high recall when memory allows.

"Dissimilar" neighbours (:meth:`GalleryStore.dissimilar`) are the gallery images *least* similar
to the query, i.e. the nearest neighbours of the negated embedding: Img2Loc's "farthest
neighbours", shown to the VLM as locations the photo is unlikely to be from.

Exclusions (``exclude_ids``, ``exclude_authors``; needed for leakage-aware evaluation) over-fetch
and filter; when too many results were excluded the search widens (more results, more IVF cells
probed, a wider HNSW beam) until ``k`` remain or the whole gallery has been searched.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geosleuth.errors import GalleryIndexError
from geosleuth.types import GalleryNeighbor, MetadataValue, Place

if TYPE_CHECKING:
    import faiss

    from geosleuth.index.encoders import ImageEncoder

STORE_FORMAT = 1
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.sqlite"
BUILD_DIR = "build"

IndexType = Literal["flat", "ivfsq", "ivfpq", "hnsw-sq"]
INDEX_TYPES: tuple[str, ...] = ("flat", "ivfsq", "ivfpq", "hnsw-sq")
METRIC = "inner_product"

# Below this many vectors the IVF types are refused: k-means cells and codebooks need data to train
# on, and an exact index of that size is small and fast anyway.
MIN_VECTORS_FOR_IVF = 1000
# faiss warns below 39 training points per k-means centre; 40 keeps training quiet and stable.
TRAIN_POINTS_PER_CELL = 40
MIN_TRAIN_SIZE = 10_000
KMEANS_ITERATIONS = 10
SQ_RANGE_STDS = 3.0
DEFAULT_NPROBE = 16
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64
# Exclusions over-fetch at most this many extra results at first; the search then widens 4x per round.
MAX_INITIAL_OVERFETCH = 1024
_WIDEN_FACTOR = 4

# Metadata keys that make up a place hierarchy (MP16-Pro column names, lower-cased).
_PLACE_KEYS = {
    "continent": "continent",
    "country_code": "country_code",
    "country": "country",
    "state": "admin1",
    "county": "admin2",
    "city": "city",
}


# ---------------------------------------------------------------------------------------------
# Identity and manifest


@dataclass(frozen=True)
class EncoderIdentity:
    """Which embedding space a store lives in. Two encoders match when name, weights hash and
    dimension all agree (``model_id`` is informative: the same weights may live in another folder)."""

    name: str
    model_id: str
    weights_hash: str
    dim: int

    @classmethod
    def of(cls, encoder: ImageEncoder) -> EncoderIdentity:
        return cls(name=encoder.name, model_id=encoder.model_id, weights_hash=encoder.weights_hash, dim=encoder.dim)

    def matches(self, other: EncoderIdentity) -> bool:
        return (self.name, self.weights_hash, self.dim) == (other.name, other.weights_hash, other.dim)

    def describe(self) -> str:
        return f"{self.name!r} ({self.model_id}, weights {self.weights_hash[:12]}, {self.dim}-d)"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderRecord(_Model):
    name: str
    model_id: str
    weights_hash: str


class StoreManifest(_Model):
    """Contents of ``manifest.json``."""

    format_version: int = STORE_FORMAT
    encoder: EncoderRecord
    dim: int = Field(gt=0)
    metric: Literal["inner_product"] = METRIC
    normalized: bool = True
    index_type: IndexType
    index_params: dict[str, Any] = Field(default_factory=dict)
    count: int = Field(ge=0)
    failures: int = Field(0, ge=0)
    source: dict[str, Any] = Field(default_factory=dict)
    build: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def encoder_identity(self) -> EncoderIdentity:
        return EncoderIdentity(self.encoder.name, self.encoder.model_id, self.encoder.weights_hash, self.dim)


@dataclass(frozen=True)
class BuildFailure:
    """An input that could not be added to the gallery."""

    source: str  # image path (or table row / embedding row)
    reason: str


# ---------------------------------------------------------------------------------------------
# Index construction (used by the builder; here because search parameters must match)


@dataclass(frozen=True)
class IndexSpec:
    """How to build the FAISS index. ``None`` values are derived from the gallery size."""

    index_type: IndexType = "flat"
    nlist: int | None = None  # IVF cells (default: see default_nlist)
    nprobe: int | None = None  # IVF cells searched per query (default 16)
    train_size: int | None = None  # vectors sampled to train IVF/PQ/SQ (default 40 per cell)
    hnsw_m: int = DEFAULT_HNSW_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef_search: int = DEFAULT_EF_SEARCH
    seed: int = 0

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise GalleryIndexError(f"unknown index type {self.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        for name in ("nlist", "nprobe", "train_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise GalleryIndexError(f"index parameter {name} must be >= 1, got {value}")

    def resolve(self, count: int, dim: int) -> dict[str, Any]:
        """Concrete parameters for ``count`` vectors of ``dim`` dimensions (recorded in the manifest)."""
        if self.index_type == "flat":
            return {}
        if self.index_type == "hnsw-sq":
            return {
                "M": self.hnsw_m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
                "train_size": min(count, self.train_size or MIN_TRAIN_SIZE * 5),
            }
        if count < MIN_VECTORS_FOR_IVF:
            raise GalleryIndexError(
                f"{count} images are too few for a {self.index_type} index (it needs at least "
                f"{MIN_VECTORS_FOR_IVF} to train on); use --index-type flat, which is exact and small at this size"
            )
        nlist = self.nlist or default_nlist(count)
        if nlist > count // 39:
            raise GalleryIndexError(
                f"nlist={nlist} IVF cells need at least {39 * nlist} vectors to train, the gallery has {count}; "
                f"use a smaller --nlist (at most {max(1, count // 39)})"
            )
        params: dict[str, Any] = {
            "nlist": nlist,
            "nprobe": min(nlist, self.nprobe or DEFAULT_NPROBE),
            "train_size": min(count, self.train_size or max(TRAIN_POINTS_PER_CELL * nlist, MIN_TRAIN_SIZE)),
            "kmeans_iterations": KMEANS_ITERATIONS,
        }
        if self.index_type == "ivfsq":
            params.update(code="SQ4 residual", sq_range_stds=SQ_RANGE_STDS)
        else:
            params.update(code="PQ fast-scan", pq_m=pq_subquantizers(dim), pq_bits=4)
        return params


def default_nlist(count: int) -> int:
    """A power of two near max(4 * sqrt(count), count / 128), with at least 39 vectors per cell.

    4 * sqrt(N) is faiss' usual guideline; count / 128 takes over above ~260k vectors so cells stay
    small: the 4-bit codes hold residuals from the cell centre, and bigger cells mean coarser codes.
    Measured on 1M clustered 768-d vectors: cells of ~244 gave recall@20 0.949, cells of ~122 0.964.
    1M -> 8192 cells, 4.7M (MP16) -> 32768.
    """
    target = max(4.0 * math.sqrt(max(count, 1)), count / 128)
    nlist = 2 ** max(0, round(math.log2(target)))
    while nlist > 1 and nlist * 39 > count:
        nlist //= 2
    return nlist


def pq_subquantizers(dim: int) -> int:
    """Sub-quantizers for 4-bit PQ: 4 dimensions each when possible (d/8 bytes), an even divisor of d."""
    for m in range(max(2, dim // 4), 1, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    raise GalleryIndexError(f"cannot build a PQ index over {dim}-d embeddings (no even divisor); use ivfsq or flat")


def create_index(index_type: str, dim: int, params: dict[str, Any]) -> faiss.Index:
    """An empty (untrained) FAISS index for normalised embeddings under inner product."""
    import faiss

    metric = faiss.METRIC_INNER_PRODUCT
    if index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if index_type == "hnsw-sq":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, int(params["M"]), metric)
        index.hnsw.efConstruction = int(params["ef_construction"])
        return index
    quantizer = faiss.IndexFlatIP(dim)
    nlist = int(params["nlist"])
    if index_type == "ivfsq":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_4bit, metric, True)
        # Mean +- 3 std per dimension instead of min..max: outliers no longer waste the 16 levels
        # (measured on 100k clustered 768-d vectors: recall@20 0.947 -> 0.964).
        index.sq.rangestat = faiss.ScalarQuantizer.RS_meanstd
        index.sq.rangestat_arg = float(params.get("sq_range_stds", SQ_RANGE_STDS))
    elif index_type == "ivfpq":
        index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, int(params["pq_m"]), 4, metric)
    else:  # pragma: no cover - IndexSpec validated the name
        raise GalleryIndexError(f"unknown index type {index_type!r}")
    index.cp.niter = int(params.get("kmeans_iterations", KMEANS_ITERATIONS))
    index.cp.seed = int(params.get("seed", 0))
    # Our training samples are sized on purpose; do not let faiss subsample them again.
    index.cp.max_points_per_centroid = max(256, int(params.get("train_size", 0)) // max(nlist, 1) + 1)
    return index


# ---------------------------------------------------------------------------------------------
# The store


@runtime_checkable
class ImageGallery(Protocol):
    """What the pipeline needs from an image gallery (:class:`GalleryStore` is the one that ships).

    ``search`` / ``dissimilar``: the ``k`` most / least similar gallery images to a retrieval
    embedding, best / least similar first, without the excluded ids and authors. ``describe``: one
    line saying which gallery this is, recorded in traces. ``close``: release its files.
    """

    def search(
        self, embedding: np.ndarray, k: int, *, exclude_ids: Iterable[str] = (), exclude_authors: Iterable[str] = ()
    ) -> list[GalleryNeighbor]: ...

    def dissimilar(
        self, embedding: np.ndarray, k: int, *, exclude_ids: Iterable[str] = (), exclude_authors: Iterable[str] = ()
    ) -> list[GalleryNeighbor]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def read_manifest(path: Path) -> StoreManifest:
    """The manifest of the store at ``path``; GalleryIndexError says what is wrong and what to do."""
    file = path / MANIFEST_FILE
    if not path.exists():
        raise GalleryIndexError(f"gallery store {str(path)!r} does not exist; build one with `geosleuth index build`")
    if not path.is_dir():
        raise GalleryIndexError(f"gallery store {str(path)!r} is a file, not a store folder")
    if not file.is_file():
        if (path / BUILD_DIR).is_dir():
            raise GalleryIndexError(
                f"gallery store {str(path)!r} is an unfinished build; "
                "re-run the same `geosleuth index build ... --resume` to finish it"
            )
        raise GalleryIndexError(
            f"{str(path)!r} is not a gallery store (no {MANIFEST_FILE}); build one with `geosleuth index build`"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryIndexError(
            f"gallery store manifest {str(file)!r} is unreadable ({exc}); rebuild the store"
        ) from None
    if isinstance(data, dict) and data.get("format_version") != STORE_FORMAT:
        raise GalleryIndexError(
            f"gallery store {str(path)!r} has format version {data.get('format_version')!r}, this geosleuth "
            f"reads version {STORE_FORMAT}; rebuild it with `geosleuth index build`"
        )
    try:
        return StoreManifest.model_validate(data)
    except ValidationError as exc:
        raise GalleryIndexError(f"gallery store manifest {str(file)!r} is invalid ({exc.error_count()} errors: "
                                f"{exc.errors()[0]['msg']}); rebuild the store") from None


def check_encoder(manifest: StoreManifest, encoder: EncoderIdentity, path: Path) -> None:
    """Raise GalleryIndexError unless ``encoder`` produces the embeddings the store was built from."""
    built = manifest.encoder_identity
    if built.matches(encoder):
        return
    raise GalleryIndexError(
        f"gallery store {str(path)!r} was built with image encoder {built.describe()}, but the configured "
        f"encoder is {encoder.describe()}: their embeddings are not comparable. Rebuild the store with "
        f"`geosleuth index build` using this encoder, or set encoders.image_encoder / encoders.image_model "
        f"to the ones the store was built with."
    )


class GalleryStore:
    """A built gallery, opened for search. Thread-safe: FAISS searches are read-only and the
    metadata connection is guarded by a lock.

    Use :meth:`open`; close with :meth:`close` (or as a context manager).
    """

    def __init__(self, path: Path, manifest: StoreManifest, index: faiss.Index, db: sqlite3.Connection) -> None:
        self.path = path
        self.manifest = manifest
        self._index = index
        self._db = db
        self._lock = threading.Lock()
        self._nprobe = int(manifest.index_params.get("nprobe", DEFAULT_NPROBE))
        self._ef_search = int(manifest.index_params.get("ef_search", DEFAULT_EF_SEARCH))

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        image_encoder: ImageEncoder | None = None,
        encoder_identity: EncoderIdentity | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> GalleryStore:
        """Open the store at ``path``.

        With ``image_encoder`` (or ``encoder_identity``) the store must have been built with that
        encoder, else GalleryIndexError. ``nprobe`` / ``ef_search`` override the built-in search
        breadth of IVF / HNSW indexes (higher: better recall, slower).
        """
        import faiss

        root = Path(path)
        manifest = read_manifest(root)
        wanted = encoder_identity or (EncoderIdentity.of(image_encoder) if image_encoder is not None else None)
        if wanted is not None:
            check_encoder(manifest, wanted, root)
        index_file, db_file = root / INDEX_FILE, root / METADATA_FILE
        for file in (index_file, db_file):
            if not file.is_file():
                raise GalleryIndexError(f"gallery store {str(root)!r} is missing {file.name}; rebuild the store")
        try:
            index = faiss.read_index(str(index_file))
        except RuntimeError as exc:
            raise GalleryIndexError(f"cannot read FAISS index {str(index_file)!r} ({exc}); rebuild the store") from None
        if index.d != manifest.dim or index.ntotal != manifest.count:
            raise GalleryIndexError(
                f"gallery store {str(root)!r} is inconsistent: the index holds {index.ntotal} x {index.d}-d vectors, "
                f"the manifest says {manifest.count} x {manifest.dim}-d; rebuild the store"
            )
        try:
            db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, check_same_thread=False)
            (rows,) = db.execute("SELECT COUNT(*) FROM items").fetchone()
        except sqlite3.Error as exc:
            raise GalleryIndexError(
                f"cannot read gallery metadata {str(db_file)!r} ({exc}); rebuild the store"
            ) from None
        if rows != manifest.count:
            db.close()
            raise GalleryIndexError(
                f"gallery store {str(root)!r} is inconsistent: {rows} metadata rows for {manifest.count} vectors; "
                "rebuild the store"
            )
        store = cls(root, manifest, index, db)
        if nprobe is not None:
            store._nprobe = max(1, nprobe)
        if ef_search is not None:
            store._ef_search = max(1, ef_search)
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        m = self.manifest
        return f"GalleryStore({str(self.path)!r}, {m.count} images, {m.index_type}, encoder={m.encoder.name!r})"

    def describe(self) -> str:
        """Where the store is, its size and index type (as traces record it)."""
        return f"{self.path} ({self.manifest.count} images, {self.manifest.index_type})"

    @property
    def encoder(self) -> EncoderIdentity:
        return self.manifest.encoder_identity

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def index_bytes(self) -> int:
        """Size of the FAISS index file (close to its size in memory)."""
        return (self.path / INDEX_FILE).stat().st_size

    # -- search ----------------------------------------------------------------------------

    def search(
        self,
        embedding: np.ndarray,
        k: int,
        *,
        exclude_ids: Iterable[str] = (),
        exclude_authors: Iterable[str] = (),
    ) -> list[GalleryNeighbor]:
        """The ``k`` most similar gallery images, most similar first (fewer only when the gallery,
        minus exclusions, holds fewer)."""
        return self.search_many(
            self._as_queries(embedding), k, exclude_ids=[list(exclude_ids)], exclude_authors=[list(exclude_authors)]
        )[0]

    def dissimilar(
        self,
        embedding: np.ndarray,
        k: int,
        *,
        exclude_ids: Iterable[str] = (),
        exclude_authors: Iterable[str] = (),
    ) -> list[GalleryNeighbor]:
        """The ``k`` least similar gallery images (Img2Loc's "farthest neighbours"), least similar first."""
        return self._search(
            self._as_queries(embedding), k, [list(exclude_ids)], [list(exclude_authors)], least_similar=True
        )[0]

    def search_many(
        self,
        embeddings: np.ndarray,
        k: int,
        *,
        exclude_ids: Sequence[Iterable[str]] | None = None,
        exclude_authors: Sequence[Iterable[str]] | None = None,
    ) -> list[list[GalleryNeighbor]]:
        """:meth:`search` for a batch of queries (Q, D) in one FAISS call; exclusions are per query
        (e.g. each query's own author for leakage-aware evaluation)."""
        queries = self._as_queries(embeddings, batch=True)
        n = len(queries)
        ids = [list(x) for x in exclude_ids] if exclude_ids is not None else [[] for _ in range(n)]
        authors = [list(x) for x in exclude_authors] if exclude_authors is not None else [[] for _ in range(n)]
        if len(ids) != n or len(authors) != n:
            raise ValueError(f"{n} queries but {len(ids)} exclude_ids and {len(authors)} exclude_authors lists")
        return self._search(queries, k, ids, authors, least_similar=False)

    def _as_queries(self, embedding: np.ndarray, *, batch: bool = False) -> np.ndarray:
        x = np.asarray(embedding, dtype=np.float32)
        if x.ndim == 1 and not batch:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise GalleryIndexError(
                f"query embedding has shape {tuple(np.shape(embedding))}, but gallery store {str(self.path)!r} holds "
                f"{self.dim}-d embeddings from encoder {self.encoder.describe()}; embed the query with that encoder"
            )
        norms = np.linalg.norm(x, axis=1)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise GalleryIndexError("query embedding is zero or not finite; the image encoder failed on this image")
        return x / norms[:, None]

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        exclude_ids: list[list[str]],
        exclude_authors: list[list[str]],
        *,
        least_similar: bool,
    ) -> list[list[GalleryNeighbor]]:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        n_queries = len(queries)
        if k == 0 or self.manifest.count == 0 or n_queries == 0:
            return [[] for _ in range(n_queries)]
        excluded = [self._excluded_rows(i, a) for i, a in zip(exclude_ids, exclude_authors, strict=True)]
        signed = -queries if least_similar else queries
        total = self.manifest.count
        found: list[list[tuple[int, float]]] = [[] for _ in range(n_queries)]
        pending = list(range(n_queries))
        widen = 1
        fetch = {i: min(total, k + min(len(excluded[i]), MAX_INITIAL_OVERFETCH)) for i in pending}
        while pending:
            # One FAISS call per distinct fetch size (usually one for the whole batch).
            by_fetch: dict[int, list[int]] = {}
            for i in pending:
                by_fetch.setdefault(fetch[i], []).append(i)
            exhaustive = self._is_exhaustive(widen)
            still: list[int] = []
            for size, members in by_fetch.items():
                scores, rows = self._index.search(signed[members], size, params=self._search_params(size, widen))
                for qi, score_row, label_row in zip(members, scores, rows, strict=True):
                    keep = [
                        (int(r), float(s)) for r, s in zip(label_row, score_row, strict=True)
                        if r >= 0 and int(r) not in excluded[qi]
                    ]
                    if len(keep) >= k or (size >= total and exhaustive):
                        found[qi] = keep[:k]
                    else:
                        still.append(qi)
                        fetch[qi] = min(total, size * _WIDEN_FACTOR)
            pending = still
            widen *= _WIDEN_FACTOR
        rows_needed = sorted({r for hits in found for r, _ in hits})
        records = self._records(rows_needed)
        sign = -1.0 if least_similar else 1.0
        # Compressed indexes estimate the cosine and can overshoot slightly; clip to its range.
        return [
            [self._neighbor(records[r], min(1.0, max(-1.0, sign * score))) for r, score in hits] for hits in found
        ]

    def _is_exhaustive(self, widen: int) -> bool:
        """Whether a search at this widening level visits every vector (given a large enough k)."""
        t = self.manifest.index_type
        if t == "flat":
            return True
        if t in ("ivfsq", "ivfpq"):
            return self._nprobe * widen >= int(self.manifest.index_params["nlist"])
        return self._ef_search * widen >= self.manifest.count  # HNSW: a beam as wide as the gallery

    def _search_params(self, k: int, widen: int) -> Any:
        import faiss

        t = self.manifest.index_type
        if t in ("ivfsq", "ivfpq"):
            nlist = int(self.manifest.index_params["nlist"])
            return faiss.SearchParametersIVF(nprobe=min(nlist, self._nprobe * widen))
        if t == "hnsw-sq":
            return faiss.SearchParametersHNSW(efSearch=max(k, self._ef_search * widen))
        return None

    def _excluded_rows(self, ids: list[str], authors: list[str]) -> set[int]:
        rows: set[int] = set()
        with self._lock:
            for column, values in (("id", ids), ("author", authors)):
                values = [str(v) for v in dict.fromkeys(values) if v is not None and str(v) != ""]
                for start in range(0, len(values), 500):  # SQLite's parameter limit
                    chunk = values[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT row FROM items WHERE {column} IN ({marks})"
                    rows.update(r for (r,) in self._db.execute(sql, chunk))
        return rows

    def _records(self, rows: list[int]) -> dict[int, tuple[Any, ...]]:
        out: dict[int, tuple[Any, ...]] = {}
        with self._lock:
            for start in range(0, len(rows), 500):
                chunk = rows[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for rec in self._db.execute(
                    f"SELECT row, id, lat, lon, author, metadata FROM items WHERE row IN ({marks})", chunk
                ):
                    out[rec[0]] = rec
        missing = set(rows) - set(out)
        if missing:
            raise GalleryIndexError(
                f"gallery store {str(self.path)!r}: index rows {sorted(missing)[:5]} have no metadata; "
                "rebuild the store"
            )
        return out

    @staticmethod
    def _neighbor(record: tuple[Any, ...], similarity: float) -> GalleryNeighbor:
        _, item_id, lat, lon, author, meta_json = record
        metadata: dict[str, MetadataValue] = json.loads(meta_json) if meta_json else {}
        if author is not None:
            metadata.setdefault("author", author)
        return GalleryNeighbor(
            id=item_id, lat=lat, lon=lon, similarity=similarity, metadata=metadata, place=place_from_metadata(metadata)
        )

    # -- inspection ------------------------------------------------------------------------

    def failures(self, limit: int | None = None) -> list[BuildFailure]:
        """Inputs left out of the gallery at build time, with the reason."""
        sql = "SELECT source, reason FROM failures ORDER BY rowid"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (limit,)
        with self._lock:
            return [BuildFailure(s, r) for s, r in self._db.execute(sql, args)]


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
