"""Distances on the Earth, vectorised over numpy arrays.

Geodesic on the WGS-84 ellipsoid (what the published benchmarks' code uses, via geopy) and
haversine on a sphere of the mean Earth radius; unit vectors for KD-trees on the sphere (a
Euclidean nearest neighbour in 3-D is the great-circle nearest neighbour: no degree-space search).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

EARTH_MEAN_RADIUS_KM = 6371.0088  # IUGG mean radius
GEOSCORE_SCALE_KM = 1492.7  # GeoGuessr's world-map decay constant


def haversine_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> NDArray[np.float64]:
    """Great-circle distance in km on a sphere of radius 6371.0088 km; broadcasts like numpy."""
    p1, p2 = np.radians(np.asarray(lat1, dtype=np.float64)), np.radians(np.asarray(lat2, dtype=np.float64))
    dlat = p2 - p1
    dlon = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dlat / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2.0) ** 2
    return 2.0 * EARTH_MEAN_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def geodesic_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> NDArray[np.float64]:
    """Geodesic distance in km on the WGS-84 ellipsoid (Karney's method, as geopy uses).

    Broadcasts like numpy. Exact but about 20 µs per pair; use :func:`haversine_km` (0.3 % error)
    inside hot loops such as candidate clustering.
    """
    from geographiclib.geodesic import Geodesic  # geopy's own dependency

    wgs84 = Geodesic.WGS84
    a1, o1, a2, o2 = np.broadcast_arrays(
        np.asarray(lat1, dtype=np.float64),
        np.asarray(lon1, dtype=np.float64),
        np.asarray(lat2, dtype=np.float64),
        np.asarray(lon2, dtype=np.float64),
    )
    out = np.empty(a1.shape, dtype=np.float64)
    flat = out.reshape(-1)
    for i, (x1, y1, x2, y2) in enumerate(zip(a1.ravel(), o1.ravel(), a2.ravel(), o2.ravel(), strict=True)):
        flat[i] = wgs84.Inverse(x1, y1, x2, y2, Geodesic.DISTANCE)["s12"] / 1000.0
    return out


def geoscore(distance_km: ArrayLike) -> NDArray[np.float64]:
    """GeoGuessr-style score: 5000 * exp(-d / 1492.7), d in km (5000 = exact, ~0 beyond 10,000 km)."""
    return 5000.0 * np.exp(-np.asarray(distance_km, dtype=np.float64) / GEOSCORE_SCALE_KM)


def unit_vectors(lat: ArrayLike, lon: ArrayLike) -> NDArray[np.float64]:
    """(N, 3) points on the unit sphere for latitudes/longitudes in degrees."""
    p = np.radians(np.asarray(lat, dtype=np.float64).reshape(-1))
    q = np.radians(np.asarray(lon, dtype=np.float64).reshape(-1))
    cos_p = np.cos(p)
    return np.stack([cos_p * np.cos(q), cos_p * np.sin(q), np.sin(p)], axis=1)


def chord_to_km(chord: ArrayLike) -> NDArray[np.float64]:
    """Great-circle distance in km for a straight-line distance between unit vectors."""
    c = np.clip(np.asarray(chord, dtype=np.float64), 0.0, 2.0)
    return 2.0 * EARTH_MEAN_RADIUS_KM * np.arcsin(c / 2.0)


def km_to_chord(km: float) -> float:
    """Inverse of :func:`chord_to_km` (for KD-tree distance bounds)."""
    return float(2.0 * np.sin(min(max(km, 0.0) / EARTH_MEAN_RADIUS_KM, np.pi) / 2.0))
