"""Text in the photo as evidence: read the lines, identify scripts and languages, find the places they name."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from geosleuth.agent.tools.gazetteer import Gazetteer
from geosleuth.agent.tools.language import LanguageIdentifier, scripts_of
from geosleuth.agent.tools.ocr import TextReader
from geosleuth.config import TextConfig
from geosleuth.types import PriorPlace, TextEvidence

PRIOR_COUNTRIES = 8  # the likeliest countries of a language prior that become points


@dataclass
class TextTools:
    """The OCR model, language identifier and gazetteer, loaded once per process (each on first use)."""

    reader: TextReader = field(default_factory=TextReader)
    languages: LanguageIdentifier = field(default_factory=LanguageIdentifier)
    gazetteer: Gazetteer = field(default_factory=Gazetteer)

    @classmethod
    def from_config(cls, config: TextConfig) -> TextTools:
        """The tools ``text.*`` asks for; their models load on first use (in a worker thread)."""
        return cls(
            reader=TextReader(min_confidence=config.min_confidence),
            gazetteer=Gazetteer(min_population=config.gazetteer_min_population),
        )


def read_text_evidence(
    image: Image.Image, tools: TextTools, box: tuple[float, float, float, float] | None = None
) -> TextEvidence:
    """Everything the text in ``image`` (or in ``box`` = (x0, y0, x1, y1) pixels of it) says about where
    it was taken (empty evidence when it has no readable text)."""
    regions = tools.reader.read(image, box)
    if not regions:
        return TextEvidence(reader=tools.reader.name)
    text = " ".join(region.text for region in regions)
    languages = tools.languages.languages(text)
    prior = tools.languages.country_prior(languages)
    return TextEvidence(
        regions=regions,
        scripts=scripts_of(text),
        languages=languages,
        country_prior=prior,
        prior_places=prior_places(prior, tools.gazetteer),
        places=tools.gazetteer.find_in_text(regions),
        reader=tools.reader.name,
    )


def prior_places(
    prior: dict[str, float], gazetteer: Gazetteer, *, countries: int = PRIOR_COUNTRIES, per_country: int = 10
) -> list[PriorPlace]:
    """The country prior as points the fusion can weigh: each of the likeliest countries' largest places,
    weighted by P(country) x population share (photos are taken where people are)."""
    out: list[PriorPlace] = []
    for code, p in sorted(prior.items(), key=lambda item: -item[1])[:countries]:
        places = gazetteer.largest_places(code, per_country)
        total = sum(population for _, _, population in places)
        out += [PriorPlace(country_code=code, lat=lat, lon=lon, weight=round(p * population / total, 6))
                for lat, lon, population in places if total > 0]
    return out
