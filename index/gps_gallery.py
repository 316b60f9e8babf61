"""GPS gallery: a fixed set of coordinates, embedded once by a location encoder, ranked per image.

GeoCLIP ranks locations by the cosine similarity between an image's GeoCLIP embedding and each
gallery coordinate's location embedding, then a softmax over the whole gallery (scaled by the
encoder's ``logit_scale``). geoclip's own ``predict`` re-embeds its 100K gallery on every call
(tens of seconds on a CPU); here the embeddings are computed once per (encoder weights, gallery
content) and cached on disk, so a query is one matrix-vector product.

A query scans an int8 copy of the embeddings (a quarter of float32's memory traffic; the scan is
memory-bound; float16 where torch has no int8 kernel: :mod:`geosleuth.index.gps_scan`), then
rescores the best candidates exactly in float32: the top-k list is exact (see
:meth:`GPSGallery.top_k`), and GeoCLIP's softmax uses the scan's similarity only for points outside
the rescored set.

Sources: ``"geoclip"`` = the 100K coordinates shipped in the geoclip package; anything else is a
CSV path with latitude/longitude columns (``lat``/``latitude``, ``lon``/``lng``/``long``/``longitude``,
any case).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from geosleuth.config import expand_path
from geosleuth.errors import DataFileError, InvalidCoordinateError
from geosleuth.fileio import atomic_writer
from geosleuth.geo import validate_coordinate
from geosleuth.index.encoders import LocationEncoder, geoclip_package_dir
from geosleuth.index.gps_scan import GalleryScan, check_variant, dot_rows, make_scan
from geosleuth.types import GPSCandidate

log = logging.getLogger(__name__)

GEOCLIP_GALLERY = "geoclip"
CACHE_SUBDIR = "gps_gallery"
CACHE_FORMAT = 1
# Candidates rescored exactly in float32 (more when the scan's error bound asks for it): the top-k
# and, for a peaked query, nearly all of the softmax normaliser's mass.
RESCORE_AT_LEAST = 256
# Embedding speed of GeoCLIP's location encoder on a 2-core CPU, for the first-run message.
EMBED_POINTS_PER_S = 5000
_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "lng", "long", "longitude")


def geoclip_gallery_csv() -> Path:
    """The 100K-coordinate CSV shipped in the geoclip package."""
    path = geoclip_package_dir() / "model" / "gps_gallery" / "coordinates_100K.csv"
    if not path.is_file():
        raise DataFileError(
            f"geoclip's GPS gallery {str(path)!r} is missing: "
            "reinstall with `pip install --no-deps --force-reinstall geoclip`"
        )
    return path


def read_coordinates_csv(path: str | os.PathLike[str]) -> np.ndarray:
    """(N, 2) float64 latitude/longitude from a CSV; longitudes wrapped to [-180, 180).

    Raises DataFileError naming the file, and the line for a bad value.
    """
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise DataFileError(
            f"GPS gallery file {str(file)!r} does not exist "
            "(index.gps_gallery takes 'geoclip' or a CSV with lat,lon columns)"
        )
    try:
        header = list(pd.read_csv(file, nrows=0).columns)
        lat_col = _pick_column(file, header, _LAT_NAMES, "latitude")
        lon_col = _pick_column(file, header, _LON_NAMES, "longitude")
        # Read as text so an error can quote the value exactly as written.
        table = pd.read_csv(file, usecols=[lat_col, lon_col], dtype=str, keep_default_na=False)
    except DataFileError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataFileError(f"GPS gallery file {str(file)!r} is not a readable CSV: {exc}") from None
    if table.empty:
        raise DataFileError(f"GPS gallery file {str(file)!r} has no rows")
    lat = pd.to_numeric(table[lat_col].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(table[lon_col].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90.0) | (np.abs(lon) > 360.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = f"GPS gallery file {str(file)!r}, line {i + 2}"  # line 1 is the header
        try:
            validate_coordinate(table[lat_col].iat[i], table[lon_col].iat[i], what=where)
        except InvalidCoordinateError as exc:
            raise DataFileError(f"{exc}; fix or remove that row") from None
        raise DataFileError(
            f"{where}: ({table[lat_col].iat[i]!r}, {table[lon_col].iat[i]!r}) is not a coordinate"
        )
    # Wrap only what is out of range: the modulo would perturb in-range values by ~1e-14.
    outside = (lon < -180.0) | (lon >= 180.0)
    lon = np.where(outside, ((lon + 180.0) % 360.0) - 180.0, lon)
    return np.stack([lat, lon], axis=1)


def _pick_column(file: Path, header: list[str], names: tuple[str, ...], what: str) -> str:
    found = [col for col in header if str(col).strip().lower() in names]
    if not found:
        raise DataFileError(
            f"GPS gallery file {str(file)!r} has no {what} column "
            f"(expected one of {', '.join(names)}, any case); "
            f"its columns are {', '.join(map(str, header)) or 'none'}"
        )
    if len(found) > 1:
        raise DataFileError(
            f"GPS gallery file {str(file)!r} has several {what} columns ({', '.join(found)}); keep one"
        )
    return found[0]


def coordinates_hash(coordinates: np.ndarray) -> str:
    """sha256 of the coordinate values (not the file): the same points give the same cache entry."""
    coords = np.ascontiguousarray(coordinates, dtype=np.float64)
    return hashlib.sha256(f"{coords.shape}".encode() + coords.tobytes()).hexdigest()


class GPSGallery:
    """Coordinates with their location embeddings; ``top_k`` ranks them for one image."""

    def __init__(
        self,
        coordinates: np.ndarray,
        embeddings: np.ndarray,
        *,
        logit_scale: float,
        source: str,
        encoder_name: str,
        encoder_weights_hash: str,
        scan: str = "auto",
    ) -> None:
        """``scan``: ``"auto"`` (exact float32 up to 8 MB of embeddings, else int8 where torch's kernel
        works, else float16), or one of ``"int8"``, ``"float16"``, ``"float32"``
        (:mod:`geosleuth.index.gps_scan`)."""
        check_variant(scan)
        if coordinates.ndim != 2 or coordinates.shape[1] != 2 or len(coordinates) == 0:
            raise ValueError(f"coordinates must have shape (N >= 1, 2), got {coordinates.shape}")
        if embeddings.ndim != 2 or len(embeddings) != len(coordinates):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(coordinates)} coordinates")
        self.coordinates = np.ascontiguousarray(coordinates, dtype=np.float64)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._scan_variant = scan
        self._scanner: concurrent.futures.ThreadPoolExecutor | None = None  # see _scan
        self._scan_ready: concurrent.futures.Future[GalleryScan] | None = None
        self._scanner_lock = threading.Lock()
        self.logit_scale = float(logit_scale)
        self.source = source
        self.encoder_name = encoder_name
        self.encoder_weights_hash = encoder_weights_hash

    @classmethod
    def load(
        cls,
        source: str,
        location_encoder: LocationEncoder,
        cache_dir: str | os.PathLike[str] | None,
    ) -> GPSGallery:
        """Read the gallery (``"geoclip"`` or a CSV path) and its embeddings, from the cache if present.

        ``cache_dir=None`` embeds without caching. The scan is built in the background (:meth:`prepare`).
        """
        path = geoclip_gallery_csv() if source == GEOCLIP_GALLERY else Path(source).expanduser()
        coordinates = read_coordinates_csv(path)
        gallery = cls.from_coordinates(coordinates, location_encoder, cache_dir=cache_dir, source=source)
        gallery.prepare()  # builds the scan while the caller loads its other models
        return gallery

    @classmethod
    def from_coordinates(
        cls,
        coordinates: np.ndarray,
        location_encoder: LocationEncoder,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        source: str = "coordinates",
    ) -> GPSGallery:
        """A gallery over given (N, 2) coordinates, embeddings cached like :meth:`load`."""
        coords = np.ascontiguousarray(coordinates, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
            raise DataFileError(
                f"GPS gallery {source!r}: expected (N >= 1, 2) coordinates, got shape {coords.shape}"
            )
        embeddings = None
        cache = None
        if cache_dir is not None:
            cache = _EmbeddingCache(expand_path(Path(cache_dir)) / CACHE_SUBDIR, location_encoder, coords)
            embeddings = cache.read()
        if embeddings is None:
            if cache is not None and len(coords) >= 10 * EMBED_POINTS_PER_S:
                # A user-visible note: the CLI shows warnings, and this wait is once per machine.
                log.warning(
                    "embedding the %s GPS gallery's %s points once, about %.0f s on a CPU; cached in %s, "
                    "later runs load it in under a second",
                    source, f"{len(coords):,}", len(coords) / EMBED_POINTS_PER_S, cache.folder,
                )
            started = time.perf_counter()
            embeddings = np.asarray(location_encoder.encode(coords), dtype=np.float32)
            log.info(
                "embedded %d GPS-gallery coordinates with %s in %.1f s",
                len(coords),
                location_encoder.name,
                time.perf_counter() - started,
            )
            if embeddings.shape != (len(coords), location_encoder.dim):
                raise ValueError(
                    f"location encoder {location_encoder.name!r} returned {embeddings.shape}, "
                    f"expected ({len(coords)}, {location_encoder.dim})"
                )
            if cache is not None:
                cache.write(embeddings, source)
        return cls(
            coords,
            embeddings,
            logit_scale=location_encoder.logit_scale,
            source=source,
            encoder_name=location_encoder.name,
            encoder_weights_hash=location_encoder.weights_hash,
        )

    def __len__(self) -> int:
        return len(self.coordinates)

    def __repr__(self) -> str:
        return f"GPSGallery(source={self.source!r}, points={len(self)}, encoder={self.encoder_name!r})"

    def similarities(self, geoclip_embedding: np.ndarray) -> np.ndarray:
        """(N,) cosine similarity of the image embedding to every gallery coordinate."""
        return dot_rows(self.embeddings, _query_vector(geoclip_embedding, self.embeddings.shape[1]))

    def top_k(self, geoclip_embedding: np.ndarray, k: int) -> list[GPSCandidate]:
        """The ``k`` best coordinates (fewer if the gallery is smaller), most similar first.

        Exact: an approximate scan (:mod:`geosleuth.index.gps_scan`) picks at least 256 candidates,
        rescored in float32, and every point whose scanned similarity comes within the scan's error
        bound of the k-th exact one is among them. ``probability`` is GeoCLIP's: a softmax of
        ``logit_scale * similarity`` over the whole gallery, exact similarities for the candidates and
        scanned ones for the rest (whose errors are independent per row and average out: within
        1e-3 relative of the float32 softmax, tests/index/test_gps_scan.py).
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        k = min(k, len(self))
        if k == 0:
            return []
        query = _query_vector(geoclip_embedding, self.embeddings.shape[1])
        sims, bound = self._scan(query)
        count = min(len(sims), max(k, RESCORE_AT_LEAST))
        while True:
            if count < len(sims):
                candidates = np.argpartition(sims, len(sims) - count)[len(sims) - count :]
            else:
                candidates = np.arange(len(sims))
            exact = dot_rows(self.embeddings[candidates], query)
            kth = np.partition(exact, len(exact) - k)[len(exact) - k]
            # A point outside the candidates beats the k-th only if exact >= kth, so scan >= kth - bound.
            needed = int(np.count_nonzero(sims >= kth - bound))
            if needed <= count:
                break
            count = needed  # a near-tie beyond the candidates: rescore more
        sims[candidates] = exact
        best = candidates[np.lexsort((candidates, -exact))][:k]  # by similarity, ties by gallery order
        # Softmax terms in float32 (logits <= ~40: off by ~4e-6 relative, far below the scan's error),
        # summed in float64; the top-k's numerators are the same terms, so no probability exceeds 1.
        terms = sims * np.float32(self.logit_scale)  # logits, turned into terms in place
        terms -= terms.max()
        np.exp(terms, out=terms)
        denominator = float(terms.sum(dtype=np.float64))
        return [
            GPSCandidate(
                lat=float(self.coordinates[i, 0]),
                lon=float(self.coordinates[i, 1]),
                similarity=float(sims[i]),
                probability=float(terms[i]) / denominator,
            )
            for i in best
        ]


    @property
    def scan_variant(self) -> str:
        """The scan in use: ``"int8"``, ``"float16"`` or ``"float32"`` (waits for it to be built)."""
        return self._built_scan().name

    def _worker(self) -> tuple[concurrent.futures.ThreadPoolExecutor, concurrent.futures.Future[GalleryScan]]:
        """This gallery's scan worker (one thread, so queries never contend with each other); its first
        job builds the scan.

        It leaves torch's thread count alone: ``torch.set_num_threads`` here would also become the count
        of every thread started later in the process (the encoders' and the VLM's), and the int8 kernel
        runs a one-row query on one thread anyway (measured: the same 3.3 ms either way).
        """
        with self._scanner_lock:
            if self._scanner is None or self._scan_ready is None:
                self._scanner = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="gps-scan"
                )
                self._scan_ready = self._scanner.submit(make_scan, self.embeddings, self._scan_variant)
            return self._scanner, self._scan_ready

    def prepare(self) -> None:
        """Start building the scan in the background (about 1 s of one core for 100K points), so the
        first query need not wait for it; a query builds it anyway."""
        self._worker()

    def _built_scan(self) -> GalleryScan:
        return self._worker()[1].result()

    def _scan(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        scanner, ready = self._worker()
        return scanner.submit(lambda: ready.result().similarities(query)).result()

    def close(self) -> None:
        """Stop the scan worker (a later query starts a new one)."""
        with self._scanner_lock:
            scanner, self._scanner, self._scan_ready = self._scanner, None, None
        if scanner is not None:
            scanner.shutdown(wait=True)


def score_locations(
    geoclip_embedding: np.ndarray, latlon: np.ndarray, location_encoder: LocationEncoder
) -> np.ndarray:
    """(N,) cosine similarities between an image's GeoCLIP embedding and arbitrary coordinates."""
    coords = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    if len(coords) == 0:
        return np.empty(0, dtype=np.float32)
    query = _query_vector(geoclip_embedding, location_encoder.dim)
    return location_encoder.encode(coords) @ query


def _query_vector(embedding: np.ndarray, dim: int) -> np.ndarray:
    """A unit (dim,) float32 vector from a (dim,) or (1, dim) embedding."""
    query = np.asarray(embedding, dtype=np.float32)
    if query.shape not in ((dim,), (1, dim)):
        raise ValueError(f"expected one GeoCLIP embedding of shape ({dim},), got {query.shape}")
    query = query.reshape(dim)
    norm = float(np.linalg.norm(query))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the GeoCLIP embedding is zero or not finite")
    return query / norm


class _EmbeddingCache:
    """One .npy + .json pair per (encoder, weights, gallery content); written atomically."""

    def __init__(self, folder: Path, encoder: LocationEncoder, coordinates: np.ndarray) -> None:
        self.folder = folder
        self.encoder = encoder
        self.count = len(coordinates)
        self.content_hash = coordinates_hash(coordinates)
        stem = f"{encoder.name}-{encoder.weights_hash[:16]}-{self.content_hash[:16]}"
        self.array_path = folder / f"{stem}.npy"
        self.meta_path = folder / f"{stem}.json"

    def _expected_meta(self) -> dict[str, object]:
        return {
            "format": CACHE_FORMAT,
            "location_encoder": self.encoder.name,
            "weights_hash": self.encoder.weights_hash,
            "content_hash": self.content_hash,
            "count": self.count,
            "dim": self.encoder.dim,
        }

    def read(self) -> np.ndarray | None:
        """The cached embeddings, or None when absent or unusable (then they are recomputed)."""
        if not (self.meta_path.is_file() and self.array_path.is_file()):
            return None
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            expected = self._expected_meta()
            if {key: meta.get(key) for key in expected} != expected:
                log.warning(
                    "GPS-gallery cache %s does not match this gallery/encoder; recomputing", self.meta_path
                )
                return None
            embeddings = np.load(self.array_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("GPS-gallery cache %s is unreadable (%s); recomputing", self.array_path, exc)
            return None
        if embeddings.shape != (self.count, self.encoder.dim) or embeddings.dtype != np.float32:
            log.warning("GPS-gallery cache %s has shape %s; recomputing", self.array_path, embeddings.shape)
            return None
        return embeddings

    def write(self, embeddings: np.ndarray, source: str) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Array first, sidecar last: a reader only trusts an array whose sidecar exists.
            _atomic_write(self.array_path, lambda fh: np.save(fh, embeddings, allow_pickle=False))
            meta = {
                **self._expected_meta(),
                "source": source,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _atomic_write(self.meta_path, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
        except OSError as exc:
            # The embeddings are correct either way; only the next start gets slower.
            log.warning("could not cache GPS-gallery embeddings in %s (%s)", self.folder, exc)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Readers see the old file or the new one (:mod:`geosleuth.fileio`)."""
    with atomic_writer(path, binary=True) as handle:
        write(handle)
