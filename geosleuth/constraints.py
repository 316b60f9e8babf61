"""Where the user says a photo was taken: a continent, a country or a circle (a chat hint, an API argument).

A core type next to :mod:`geosleuth.types`: retrieval, verification, the chat and the Python API all
take these. Checking which coordinates lie inside needs the offline reverse geocoder, which the
caller passes in (nothing heavy is loaded here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from geosleuth.geo import CONTINENT_NAMES, haversine_km, validate_coordinate

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder

__all__ = ["Constraint", "ConstraintKind", "contains_all"]

ConstraintKind = Literal["continent", "country", "circle"]


class Constraint(BaseModel):
    """Where the user says the photo is: a continent, a country, or a circle around a point.

    Build with :meth:`in_continent`, :meth:`in_country` or :meth:`within`. ``label`` is how it is
    shown to the user (e.g. "within 50 km of Porto").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ConstraintKind
    label: str
    continent: str | None = None  # one of geosleuth.geo.CONTINENT_NAMES' values
    country_code: str | None = None  # ISO 3166-1 alpha-2
    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        if self.kind == "continent" and self.continent not in CONTINENT_NAMES.values():
            raise ValueError(
                f"unknown continent {self.continent!r}; use one of {', '.join(CONTINENT_NAMES.values())}"
            )
        if self.kind == "country" and not (self.country_code and len(self.country_code) == 2):
            raise ValueError(f"a country constraint needs a 2-letter ISO country code, got {self.country_code!r}")
        if self.kind == "circle":
            if self.lat is None or self.lon is None or self.radius_km is None:
                raise ValueError("a circle constraint needs lat, lon and radius_km")
            validate_coordinate(self.lat, self.lon, what=f"constraint {self.label!r}")
            if not self.radius_km > 0:
                raise ValueError(f"a circle constraint needs radius_km > 0, got {self.radius_km}")
        return self

    @classmethod
    def in_continent(cls, continent: str) -> Constraint:
        return cls(kind="continent", continent=continent, label=f"in {continent}")

    @classmethod
    def in_country(cls, country_code: str, name: str | None = None) -> Constraint:
        code = country_code.upper()
        return cls(kind="country", country_code=code, label=f"in {name or code}")

    @classmethod
    def within(cls, lat: float, lon: float, radius_km: float, place: str | None = None) -> Constraint:
        where = place or f"({lat:.4f}, {lon:.4f})"
        return cls(kind="circle", lat=lat, lon=lon, radius_km=radius_km, label=f"within {radius_km:g} km of {where}")

    def contains(self, lats: Sequence[float] | np.ndarray, lons: Sequence[float] | np.ndarray,
                 geocoder: ReverseGeocoder) -> np.ndarray:
        """(N,) bool: which coordinates lie inside (country/continent by offline reverse geocoding)."""
        lat = np.asarray(lats, dtype=np.float64).reshape(-1)
        lon = np.asarray(lons, dtype=np.float64).reshape(-1)
        if len(lat) == 0:
            return np.zeros(0, dtype=bool)
        if self.kind == "circle":
            return haversine_km(lat, lon, self.lat, self.lon) <= self.radius_km
        places = geocoder.lookup_many(zip(lat.tolist(), lon.tolist(), strict=True))
        if self.kind == "country":
            return np.array([p.country_code == self.country_code for p in places], dtype=bool)
        return np.array([p.continent == self.continent for p in places], dtype=bool)


def contains_all(constraints: Sequence[Constraint], lats: Sequence[float] | np.ndarray,
                 lons: Sequence[float] | np.ndarray, geocoder: ReverseGeocoder) -> np.ndarray:
    """(N,) bool: inside every constraint (all True when there are none)."""
    inside = np.ones(len(np.asarray(lats).reshape(-1)), dtype=bool)
    for constraint in constraints:
        inside &= constraint.contains(lats, lons, geocoder)
    return inside
