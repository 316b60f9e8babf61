"""Coordinate validation and longitude wrapping: the one implementation every module uses.

This module imports nothing from geosleuth but ``errors``, so ``geosleuth.types`` can use it
without an import cycle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geosleuth.errors import InvalidCoordinateError


def normalize_lon(lon: float) -> float:
    """Longitude wrapped into [-180, 180) (in-range values are returned unchanged, bit for bit)."""
    lon = float(lon)
    return lon if -180.0 <= lon < 180.0 else ((lon + 180.0) % 360.0) - 180.0


def validate_coordinate(lat: Any, lon: Any, *, what: str = "coordinate") -> tuple[float, float]:
    """Return (lat, lon) as floats with longitude normalised to [-180, 180).

    Raises InvalidCoordinateError naming ``what`` when a value is missing, not a number, or out of
    range. Longitudes in [-360, 360] are wrapped; anything beyond is taken as a data error.
    """
    try:
        lat_f = float(lat)
        lon_f = float(lon)
    except (TypeError, ValueError):
        raise InvalidCoordinateError(
            f"{what}: latitude/longitude must be numbers, got ({lat!r}, {lon!r})"
        ) from None
    if not (math.isfinite(lat_f) and math.isfinite(lon_f)):
        raise InvalidCoordinateError(f"{what}: ({lat_f}, {lon_f}) is not a finite coordinate")
    if not -90.0 <= lat_f <= 90.0:
        raise InvalidCoordinateError(
            f"{what}: latitude {lat_f} is outside [-90, 90] (are latitude and longitude swapped?)"
        )
    if not -360.0 <= lon_f <= 360.0:
        raise InvalidCoordinateError(f"{what}: longitude {lon_f} is outside [-180, 180]")
    return lat_f, normalize_lon(lon_f)


def validate_coordinates(lats: ArrayLike, lons: ArrayLike, *, what: str = "coordinates") -> tuple[
    NDArray[np.float64], NDArray[np.float64]
]:
    """Vectorised :func:`validate_coordinate`; the error names the first bad row."""
    lat = np.asarray(lats, dtype=np.float64)
    lon = np.asarray(lons, dtype=np.float64)
    if lat.shape != lon.shape:
        raise InvalidCoordinateError(f"{what}: {lat.shape} latitudes but {lon.shape} longitudes")
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90.0) | (np.abs(lon) > 360.0)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        validate_coordinate(lat.ravel()[i], lon.ravel()[i], what=f"{what} (row {i})")
    return lat, np.where((lon >= -180.0) & (lon < 180.0), lon, ((lon + 180.0) % 360.0) - 180.0)
