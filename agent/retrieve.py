"""The retrieve stage: similar and dissimilar gallery images, and GPS-gallery candidates.

Either source may be absent: a fresh install has no image gallery (GPS gallery + VLM only), and
an image encoder without a GeoCLIP head gives no GPS-gallery candidates. ``sources`` in the result
says which ones answered.

Under user constraints (a continent, a country, a circle) the neighbours and GPS candidates shown
to the VLM and scored by verification come from inside the constraint: the gallery is searched
wider and filtered, and the GPS gallery is ranked among its points inside the constraint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from geosleuth.config import Config
from geosleuth.constraints import Constraint, contains_all
from geosleuth.types import GalleryNeighbor, GPSCandidate, RetrievalResult

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder
    from geosleuth.index.encoders import ImageEmbeddings
    from geosleuth.index.gps_gallery import GPSGallery
    from geosleuth.index.store import ImageGallery

SOURCE_GALLERY = "gallery"
SOURCE_GPS_GALLERY = "gps-gallery"
# Under a constraint, search this many times k gallery neighbours, then keep those inside.
CONSTRAINED_OVERSAMPLE = 20
# GPS-gallery points are tested against a constraint in chunks of this many, best first.
_GPS_CHUNK = 4096


def retrieve(
    embeddings: ImageEmbeddings,
    store: ImageGallery | None,
    gps_gallery: GPSGallery | None,
    config: Config,
    geocoder: ReverseGeocoder,
    *,
    constraints: Sequence[Constraint] = (),
    exclude_ids: Sequence[str] = (),
    exclude_authors: Sequence[str] = (),
) -> RetrievalResult:
    """Gallery neighbours (with reverse-geocoded places), dissimilar neighbours and GPS candidates.

    ``embeddings`` holds one image (the row perceive produced). ``exclude_authors`` adds to
    ``config.retrieval.exclude_authors``.
    """
    settings = config.retrieval
    authors = tuple(dict.fromkeys([*settings.exclude_authors, *exclude_authors]))
    ids = tuple(exclude_ids)
    result = RetrievalResult()
    if store is not None:
        query = embeddings.retrieval[0]
        result.neighbors = gallery_neighbors(store, query, settings.k_neighbors, ids, authors, constraints, geocoder)
        if settings.k_dissimilar > 0:
            result.dissimilar = _with_places(
                store.dissimilar(query, settings.k_dissimilar, exclude_ids=ids, exclude_authors=authors), geocoder
            )
        result.sources.append(SOURCE_GALLERY)
    if gps_gallery is not None and embeddings.geoclip is not None and settings.k_gps > 0:
        geoclip = embeddings.geoclip[0]
        result.gps_candidates = gps_candidates(gps_gallery, geoclip, settings.k_gps, constraints, geocoder)
        result.sources.append(SOURCE_GPS_GALLERY)
    return result


def gallery_neighbors(
    store: ImageGallery,
    query: np.ndarray,
    k: int,
    ids: Sequence[str],
    authors: Sequence[str],
    constraints: Sequence[Constraint],
    geocoder: ReverseGeocoder,
) -> list[GalleryNeighbor]:
    """The ``k`` nearest gallery images to ``query`` inside every constraint (none from ``ids`` or by
    ``authors``), with their places."""
    if k <= 0:
        return []
    if not constraints:
        return _with_places(store.search(query, k, exclude_ids=ids, exclude_authors=authors), geocoder)
    found = store.search(query, k * CONSTRAINED_OVERSAMPLE, exclude_ids=ids, exclude_authors=authors)
    inside = contains_all(constraints, [n.lat for n in found], [n.lon for n in found], geocoder)
    return _with_places([n for n, keep in zip(found, inside, strict=True) if keep][:k], geocoder)


def _with_places(neighbors: list[GalleryNeighbor], geocoder: ReverseGeocoder) -> list[GalleryNeighbor]:
    """Fill in each neighbour's place hierarchy (prompts and traces show place names)."""
    missing = [n for n in neighbors if n.place is None]
    for neighbor, place in zip(missing, geocoder.lookup_many([(n.lat, n.lon) for n in missing]), strict=True):
        neighbor.place = place
    return neighbors


def gps_candidates(
    gallery: GPSGallery,
    geoclip: np.ndarray,
    k: int,
    constraints: Sequence[Constraint],
    geocoder: ReverseGeocoder,
) -> list[GPSCandidate]:
    """The ``k`` GPS-gallery points most similar to the image's GeoCLIP embedding, inside every constraint."""
    if constraints:
        return _gps_inside(gallery, geoclip, k, constraints, geocoder)
    return gallery.top_k(geoclip, k)


def _gps_inside(
    gallery: GPSGallery,
    geoclip: np.ndarray,
    k: int,
    constraints: Sequence[Constraint],
    geocoder: ReverseGeocoder,
) -> list[GPSCandidate]:
    """The ``k`` most similar GPS-gallery points inside every constraint."""
    sims = gallery.similarities(geoclip).astype(np.float64)
    order = np.argsort(-sims, kind="stable")
    chosen: list[int] = []
    for start in range(0, len(order), _GPS_CHUNK):
        chunk = order[start : start + _GPS_CHUNK]
        coords = gallery.coordinates[chunk]
        inside = contains_all(constraints, coords[:, 0], coords[:, 1], geocoder)
        chosen.extend(int(i) for i in chunk[inside][: k - len(chosen)])
        if len(chosen) >= k:
            break
    # probability stays None: GeoCLIP's is a softmax over the whole gallery, and renormalising over
    # the points inside a constraint would mean reverse-geocoding all of them.
    return [
        GPSCandidate(
            lat=float(gallery.coordinates[i, 0]), lon=float(gallery.coordinates[i, 1]), similarity=float(sims[i])
        )
        for i in chosen
    ]
