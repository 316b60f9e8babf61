"""Argument types several tools share: a box of the photo and an area of the Earth.

Both are pydantic models, so they appear in each tool's JSON schema and are checked by
:meth:`~geosleuth.agent.tools.registry.ToolRegistry.call` before a tool runs; what a schema cannot
express (a box with x1 <= x0, a country nobody knows) is checked here and raised as ToolError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from geosleuth.agent.tools.registry import ToolError
from geosleuth.constraints import Constraint
from geosleuth.geo import CONTINENT_NAMES, fold_name

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder

# A box smaller than this many pixels of the photo on either side holds nothing worth looking at.
MIN_BOX_PIXELS = 8

_CONTINENTS = {fold_name(name): name for name in CONTINENT_NAMES.values()} | {
    fold_name(code): name for code, name in CONTINENT_NAMES.items()
} | {"australia": "Oceania", "australasia": "Oceania"}


class Box(BaseModel):
    """A rectangle of the photo in fractions of its width and height: (0, 0) top left, (1, 1) bottom right."""

    model_config = ConfigDict(extra="forbid")

    x0: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="left edge, fraction of the width")
    y0: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="top edge, fraction of the height")
    x1: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="right edge, fraction of the width")
    y1: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="bottom edge, fraction of the height")

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(
                f"empty box: need x0 < x1 and y0 < y1 (got x0={self.x0}, y0={self.y0}, x1={self.x1}, y1={self.y1})"
            )
        return self

    def pixels(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The box in pixels of an image of ``size`` (ToolError when it holds fewer than MIN_BOX_PIXELS a side)."""
        width, height = size
        left, top = round(self.x0 * width), round(self.y0 * height)
        right, bottom = round(self.x1 * width), round(self.y1 * height)
        if right - left < MIN_BOX_PIXELS or bottom - top < MIN_BOX_PIXELS:
            raise ToolError(
                f"the box {self.describe()} is only {right - left}x{bottom - top} pixels of the {width}x{height} "
                f"photo: choose a box at least {MIN_BOX_PIXELS} pixels on each side"
            )
        return left, top, right, bottom

    def describe(self) -> str:
        return f"(x0={self.x0:.3g}, y0={self.y0:.3g}, x1={self.x1:.3g}, y1={self.y1:.3g})"


class Area(BaseModel):
    """Where to look: exactly one of a country, a continent, or a circle (lat, lon, radius_km)."""

    model_config = ConfigDict(extra="forbid")

    country: str | None = Field(None, description="country name or ISO 3166-1 alpha-2 code, e.g. 'Portugal' or 'PT'")
    continent: str | None = Field(None, description=f"one of {', '.join(CONTINENT_NAMES.values())}")
    lat: float | None = Field(None, ge=-90.0, le=90.0, allow_inf_nan=False, description="circle centre latitude")
    lon: float | None = Field(None, ge=-180.0, le=180.0, allow_inf_nan=False, description="circle centre longitude")
    radius_km: float | None = Field(None, gt=0.0, le=20_000.0, allow_inf_nan=False, description="circle radius, km")

    @model_validator(mode="after")
    def _one_kind(self) -> Area:
        circle = [self.lat, self.lon, self.radius_km]
        if any(v is not None for v in circle) and any(v is None for v in circle):
            raise ValueError("a circle needs all of lat, lon and radius_km")
        kinds = (self.country is not None) + (self.continent is not None) + (self.lat is not None)
        if kinds != 1:
            raise ValueError("give exactly one of: country, continent, or a circle (lat, lon, radius_km)")
        return self

    def constraint(self, geocoder: ReverseGeocoder) -> Constraint:
        """The area as a :class:`~geosleuth.constraints.Constraint` (ToolError for an unknown name)."""
        if self.country is not None:
            code = geocoder.country_code(self.country.strip())
            if code is None:
                raise ToolError(f"unknown country {self.country!r}: give its English name or ISO 3166-1 alpha-2 code")
            info = geocoder.countries.get(code)
            return Constraint.in_country(code, info.name if info else None)
        if self.continent is not None:
            continent = _CONTINENTS.get(fold_name(self.continent))
            if continent is None:
                raise ToolError(
                    f"unknown continent {self.continent!r}: use one of {', '.join(CONTINENT_NAMES.values())}"
                )
            return Constraint.in_continent(continent)
        assert self.lat is not None and self.lon is not None and self.radius_km is not None
        return Constraint.within(self.lat, self.lon, self.radius_km)
