"""What a chat message is: a hint about the place (a constraint), a request to drop the hints, an
unknown place, or a question. A small deterministic parser of what the *user* typed (never of model
output), and the helpers that combine hints and spell them out for the user and the VLM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from geosleuth.agent.chat.places import PlaceResolver, fold, normalise_text
from geosleuth.constraints import Constraint

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder

DEFAULT_CITY_RADIUS_KM = 50.0  # "it's in Porto" / "near Porto"
KM_PER_MILE = 1.609344


@dataclass(frozen=True)
class Hint:
    """What a chat message is: a constraint, a request to drop them, an unknown place, or a question."""

    kind: Literal["constraint", "clear", "unknown-place", "question"]
    constraint: Constraint | None = None
    place_text: str | None = None


_PREFIX = re.compile(r"^(?:hint|actually|no|well|ok|okay|i think|i know|i am sure|i m sure|note|fyi)\s*[:,]?\s+")
_CLEAR = re.compile(
    r"^(?:(?:forget|clear|drop|reset|remove|ignore)(?: (?:the|my|all|all the|any))? (?:hints?|constraints?)"
    r"|reset|no hints?|clear)$"
)
_RADIUS = re.compile(
    r"^(?:it s |it is |this is |taken )?(?:within|less than|under|inside|at most)?\s*"
    r"(\d+(?:\.\d+)?)\s*(km|kms|kilometers|kilometres|mi|miles)\s+(?:of|from|around)\s+(.+)$"
)
_NEAR = re.compile(r"^(?:it s |it is |this is |taken )?(?:near|close to|around)\s+(.+)$")
_IN = re.compile(
    r"^(?:(?:it|this|that|the (?:photo|picture|image|place|location))\s+(?:s|is|was)\s+)?"
    r"(?:(?:taken|shot|located)\s+)?(?:somewhere\s+)?(?:in|from)\s+(.+)$"
)


def parse_hint(message: str, resolver: PlaceResolver) -> Hint:
    """Classify a chat message; a hint becomes a :class:`Constraint`.

    Understood: "it is in South America", "it's in Spain", "in Japan", "Spain" (a bare continent or
    country), "within 50 km of Porto", "20 miles from Lima, Peru", "near Nairobi", "it's in Porto"
    (a city: within 50 km), "clear hints". A message ending in "?" is always a question.
    """
    text = message.strip()
    if not text or text.endswith("?"):
        return Hint("question")
    norm = normalise_text(text)
    while (stripped := _PREFIX.sub("", norm)) != norm:
        norm = stripped
    if _CLEAR.match(norm):
        return Hint("clear")
    if match := _RADIUS.match(norm):
        value, unit, place = float(match[1]), match[2], match[3]
        radius = value * (KM_PER_MILE if unit.startswith("mi") else 1.0)
        city = resolver.city(place)
        if city is None or radius <= 0:
            return Hint("unknown-place", place_text=place)
        return Hint("constraint", Constraint.within(city.lat, city.lon, radius, f"{city.name} ({city.country_code})"))
    if match := _NEAR.match(norm):
        return _place_hint(match[1], resolver)
    if match := _IN.match(norm):
        return _place_hint(match[1], resolver)
    # A bare continent or country name is a hint; anything else is a question.
    if resolver.continent(norm) or resolver.country(fold(norm)):
        return _place_hint(norm, resolver)
    return Hint("question")


def _place_hint(place: str, resolver: PlaceResolver) -> Hint:
    place = place.strip(" ,.")
    # "the Netherlands" is a name; "the south of France" is not understood (no partial areas).
    names = [place, place[4:]] if place.startswith("the ") else [place]
    for name in names:
        if continent := resolver.continent(name):
            return Hint("constraint", Constraint.in_continent(continent))
        if code := resolver.country(fold(name)):
            info = resolver.geocoder.countries.get(code)
            return Hint("constraint", Constraint.in_country(code, info.name if info else None))
    for name in names:
        if city := resolver.city(name):
            where = f"{city.name} ({city.country_code})"
            return Hint("constraint", Constraint.within(city.lat, city.lon, DEFAULT_CITY_RADIUS_KM, where))
    return Hint("unknown-place", place_text=place)


def describe_constraint(constraint: Constraint, geocoder: ReverseGeocoder) -> str:
    """The constraint as it was understood, spelt out (code and centre included: "Georgia" or
    "Porto" alone can mean several places)."""
    if constraint.kind == "continent":
        return f"continent {constraint.continent}"
    if constraint.kind == "country":
        info = geocoder.countries.get(constraint.country_code or "")
        return f"country {info.name} ({constraint.country_code})" if info else f"country {constraint.country_code}"
    return f"{constraint.label}, centre {constraint.lat:.4f}, {constraint.lon:.4f}"


def hint_text(constraints: Sequence[Constraint], words: Mapping[str, str], geocoder: ReverseGeocoder) -> str | None:
    """What the VLM is told when it re-locates under hints: each active constraint in the user's
    words (``words``: constraint label -> message) with what it was read as, e.g. "it is in South
    America (constraint: continent South America)". None without constraints."""
    parts = []
    for constraint in constraints:
        understood = f"(constraint: {describe_constraint(constraint, geocoder)})"
        said = words.get(constraint.label)
        parts.append(f"{said} {understood}" if said else understood)
    return "; ".join(parts) or None


def merge_constraints(active: list[Constraint], new: Constraint) -> list[Constraint]:
    """Add a hint. A new area (continent or country) replaces the earlier area, a new circle the
    earlier circle; an area and a circle both apply ("in Spain" + "within 50 km of Madrid")."""
    family = "circle" if new.kind == "circle" else "area"
    return [c for c in active if ("circle" if c.kind == "circle" else "area") != family] + [new]
