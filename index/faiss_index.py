"""The FAISS index of a gallery store: its types, their parameters, construction and search breadth.

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

Build and search live side by side here because the search breadth (``nprobe``, ``efSearch``)
must match what the build chose (recorded in the manifest's ``index_params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from geosleuth.errors import GalleryIndexError

if TYPE_CHECKING:
    import faiss

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


@dataclass(frozen=True)
class SearchBreadth:
    """How much of an index one search visits: IVF cells probed (``nprobe``) or the HNSW beam
    (``ef_search``), times the widening level of an over-fetching search (1, 4, 16, ...)."""

    index_type: str
    index_params: dict[str, Any]  # as the manifest records them
    count: int  # vectors in the index
    nprobe: int
    ef_search: int

    @classmethod
    def of(
        cls, index_type: str, index_params: dict[str, Any], count: int, *,
        nprobe: int | None = None, ef_search: int | None = None,
    ) -> SearchBreadth:
        """The build's breadth (``index_params``), or the given overrides (at least 1)."""
        return cls(
            index_type, index_params, count,
            nprobe=max(1, nprobe) if nprobe is not None else int(index_params.get("nprobe", DEFAULT_NPROBE)),
            ef_search=(
                max(1, ef_search) if ef_search is not None else int(index_params.get("ef_search", DEFAULT_EF_SEARCH))
            ),
        )

    def is_exhaustive(self, widen: int) -> bool:
        """Whether a search at this widening level visits every vector (given a large enough k)."""
        if self.index_type == "flat":
            return True
        if self.index_type in ("ivfsq", "ivfpq"):
            return self.nprobe * widen >= int(self.index_params["nlist"])
        return self.ef_search * widen >= self.count  # HNSW: a beam as wide as the gallery

    def params(self, k: int, widen: int) -> Any:
        """FAISS search parameters for ``k`` results at this widening level (None: flat needs none)."""
        import faiss

        if self.index_type in ("ivfsq", "ivfpq"):
            nlist = int(self.index_params["nlist"])
            return faiss.SearchParametersIVF(nprobe=min(nlist, self.nprobe * widen))
        if self.index_type == "hnsw-sq":
            return faiss.SearchParametersHNSW(efSearch=max(k, self.ef_search * widen))
        return None
