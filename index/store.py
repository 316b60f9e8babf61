"""The image-gallery store: a folder holding a FAISS index, per-image metadata and a manifest.

Layout of a store folder::

    manifest.json     what the index is (encoder id + weights hash, dim, metric, index type and
                      parameters, count, source, build parameters, creation time). Written last:
                      a folder without it is an unfinished build.
    index.faiss       the FAISS index; FAISS id = row number in ``metadata.sqlite``
    metadata.sqlite   ``items(row, id, lat, lon, author, metadata JSON)`` and
                      ``failures(source, reason)`` (images that could not be used, and why)
    build/            the resumable build's work area (see :mod:`geosleuth.index.build`)

Similarity is the inner product of L2-normalised embeddings (cosine); the index types (``flat``,
``ivfsq``, ``ivfpq``, ``hnsw-sq``) are described in :mod:`geosleuth.index.faiss_index`, the
manifest in :mod:`geosleuth.index.manifest`, the metadata tables in
:mod:`geosleuth.index.gallery_metadata`.

"Dissimilar" neighbours (:meth:`GalleryStore.dissimilar`) are the gallery images *least* similar
to the query, i.e. the nearest neighbours of the negated embedding: Img2Loc's "farthest
neighbours", shown to the VLM as locations the photo is unlikely to be from.

Exclusions (``exclude_ids``, ``exclude_authors``; needed for leakage-aware evaluation) over-fetch
and filter; when too many results were excluded the search widens (more results, more IVF cells
probed, a wider HNSW beam) until ``k`` remain or the whole gallery has been searched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from geosleuth.errors import GalleryIndexError
from geosleuth.index.faiss_index import SearchBreadth
from geosleuth.index.gallery_metadata import GalleryMetadata, neighbor_from_record
from geosleuth.index.manifest import (
    INDEX_FILE,
    METADATA_FILE,
    BuildFailure,
    EncoderIdentity,
    StoreManifest,
    check_encoder,
    read_manifest,
)
from geosleuth.types import GalleryNeighbor

if TYPE_CHECKING:
    import faiss

    from geosleuth.index.encoders import ImageEncoder

# Exclusions over-fetch at most this many extra results at first; the search then widens 4x per round.
MAX_INITIAL_OVERFETCH = 1024
_WIDEN_FACTOR = 4


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


class GalleryStore:
    """A built gallery, opened for search. Thread-safe: FAISS searches are read-only and the
    metadata (:class:`~geosleuth.index.gallery_metadata.GalleryMetadata`) guards its connection.

    Use :meth:`open`; close with :meth:`close` (or as a context manager).
    """

    def __init__(
        self, path: Path, manifest: StoreManifest, index: faiss.Index, metadata: GalleryMetadata,
        breadth: SearchBreadth,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._index = index
        self._metadata = metadata
        self._breadth = breadth

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
        metadata = GalleryMetadata.open(root, db_file)
        if metadata.count != manifest.count:
            metadata.close()
            raise GalleryIndexError(
                f"gallery store {str(root)!r} is inconsistent: {metadata.count} metadata rows for {manifest.count} "
                "vectors; rebuild the store"
            )
        breadth = SearchBreadth.of(
            manifest.index_type, manifest.index_params, manifest.count, nprobe=nprobe, ef_search=ef_search
        )
        return cls(root, manifest, index, metadata, breadth)

    def close(self) -> None:
        self._metadata.close()

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
        excluded = [self._metadata.excluded_rows(i, a) for i, a in zip(exclude_ids, exclude_authors, strict=True)]
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
            exhaustive = self._breadth.is_exhaustive(widen)
            still: list[int] = []
            for size, members in by_fetch.items():
                scores, rows = self._index.search(signed[members], size, params=self._breadth.params(size, widen))
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
        records = self._metadata.records(rows_needed)
        sign = -1.0 if least_similar else 1.0
        # Compressed indexes estimate the cosine and can overshoot slightly; clip to its range.
        return [
            [neighbor_from_record(records[r], min(1.0, max(-1.0, sign * score))) for r, score in hits] for hits in found
        ]

    # -- inspection ------------------------------------------------------------------------

    def failures(self, limit: int | None = None) -> list[BuildFailure]:
        """Inputs left out of the gallery at build time, with the reason."""
        return self._metadata.failures(limit)
