"""The reverse-geocoded place: what :class:`geosleuth.geo.ReverseGeocoder` returns.

It lives here, not in ``geosleuth.types`` (which re-exports it), so that the geo package depends on
no other geosleuth module but ``errors`` and ``types`` can use geo's coordinate validation.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Place(BaseModel):
    """A reverse-geocoded place hierarchy. Any level may be unknown (None).

    On land: the country is the Natural Earth polygon the point lies in (an overseas territory such
    as Guadeloupe by its own ISO code); region, district and city come from the nearest GeoNames
    place *in that country* (so the levels always agree). At sea (``at_sea``: no polygon within
    1 km, no town within 3 km): no country, region or city; ``coast_km`` and ``nearest_country`` say
    how far off which country's coast the point is.
    """

    # extra="forbid": a misspelt field is a bug, not something to carry silently.
    model_config = ConfigDict(extra="forbid", frozen=False)

    continent: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2 (XK for Kosovo); None at sea
    country: str | None = None
    admin1: str | None = None  # region / state
    admin2: str | None = None  # county / district
    city: str | None = None  # nearest GeoNames place with >= 1000 people in the same country
    city_distance_km: float | None = None  # how far that place is (large: wilderness)
    at_sea: bool = False  # in no polygon, beyond the coastal tolerance, and no town next to it
    coast_km: float | None = None  # outside every polygon: distance to the nearest land boundary
    nearest_country_code: str | None = None  # at sea: the country whose coast is nearest
    nearest_country: str | None = None

    def hierarchy(self) -> str:
        """E.g. 'Europe > Portugal > Lisbon > Sintra', or 'at sea, 12 km off France'."""
        if self.at_sea:
            if self.coast_km is None:
                return "at sea"
            off = self.nearest_country or self.nearest_country_code or "the nearest coast"
            return f"at sea, {_km(self.coast_km)} off {off}"
        parts = [self.continent, self.country, self.admin1, self.city]
        out: list[str] = []
        for part in parts:
            if part and (not out or out[-1] != part):
                out.append(part)
        return " > ".join(out) if out else "unknown place"


def _km(km: float) -> str:
    return f"{km:.1f} km" if km < 10 else f"{km:,.0f} km"
