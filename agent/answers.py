"""A validated :class:`~geosleuth.prompts.schema.GeoAnswer` as a typed result: a :class:`Hypothesis`
(a coordinate, echo-checked) or an :class:`Abstention` (a null coordinate with a reason).

One home for the conversion: the reason stage uses it for every reply, and the ``submit`` tool
(``agent/tools/submit.py``) for the answer a tool-using model submits.

Echoes: an answer whose coordinate lies within ``ECHO_RADIUS_KM`` of a coordinate the model was
shown (a gallery neighbour, a GPS candidate, a tool's candidate) is marked ``Hypothesis.echo_of``:
it may have copied the hint rather than read the photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geosleuth.geo import haversine_km
from geosleuth.prompts.schema import GeoAnswer
from geosleuth.types import Abstention, Clue, Hypothesis

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder

# An answer this close to a coordinate shown in its own prompt repeats it (GeoCLIP's GPS gallery
# points are about 60 km apart on average, a city is ~10-20 km across).
ECHO_RADIUS_KM = 5.0


@dataclass(frozen=True)
class ShownCoordinate:
    label: str  # e.g. "neighbor 2", "gps candidate 1"
    lat: float
    lon: float


@dataclass(frozen=True)
class AnswerOrigin:
    """Where an answer came from, as every Hypothesis/Abstention records it."""

    template_id: str
    template_hash: str
    model: str
    variant: str
    sample_index: int = 0


def echo_of(lat: float, lon: float, shown: Sequence[ShownCoordinate], radius_km: float = ECHO_RADIUS_KM) -> str | None:
    """Which shown coordinate (if any) an answer repeats: the nearest within ``radius_km``."""
    if not shown:
        return None
    distances = [float(haversine_km(lat, lon, c.lat, c.lon)) for c in shown]
    nearest = min(range(len(shown)), key=distances.__getitem__)
    if distances[nearest] > radius_km:
        return None
    c = shown[nearest]
    return f"{c.label} ({c.lat:.4f}, {c.lon:.4f}), {distances[nearest]:.1f} km away"


def _clean(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


def answer_result(
    answer: GeoAnswer, raw: str, origin: AnswerOrigin, geocoder: ReverseGeocoder,
    shown: Sequence[ShownCoordinate] = (),
) -> Hypothesis | Abstention:
    """An abstention (null coordinate) or a hypothesis (echo-checked against ``shown``)."""
    if answer.abstains:
        return Abstention(
            variant=origin.variant, template_id=origin.template_id, template_hash=origin.template_hash,
            model=origin.model, reason=(answer.cannot_tell_because or "").strip(), raw_text=raw,
            sample_index=origin.sample_index,
        )
    assert answer.latitude is not None and answer.longitude is not None  # GeoAnswer checks both or neither
    return Hypothesis(
        clues=[Clue(observation=c.observation, implication=c.implication) for c in answer.clues],
        continent=_clean(answer.continent),
        country=_clean(answer.country),
        country_code=geocoder.country_code(answer.country),
        region=_clean(answer.region),
        city=_clean(answer.city),
        lat=answer.latitude,
        lon=answer.longitude,
        confidence=answer.confidence,
        raw_text=raw,
        template_id=origin.template_id,
        template_hash=origin.template_hash,
        model=origin.model,
        variant=origin.variant,
        sample_index=origin.sample_index,
        shown_coordinates=len(shown),
        echo_of=echo_of(answer.latitude, answer.longitude, shown),
    )
