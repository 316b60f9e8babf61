"""Text in the photo as evidence: read the lines, identify scripts and languages, find the places they name."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from geosleuth.agent.tools.gazetteer import Gazetteer
from geosleuth.agent.tools.language import LanguageIdentifier, scripts_of
from geosleuth.agent.tools.ocr import TextReader
from geosleuth.types import TextEvidence


@dataclass
class TextTools:
    """The OCR model, language identifier and gazetteer, loaded once per process (each on first use)."""

    reader: TextReader = field(default_factory=TextReader)
    languages: LanguageIdentifier = field(default_factory=LanguageIdentifier)
    gazetteer: Gazetteer = field(default_factory=Gazetteer)


def read_text_evidence(image: Image.Image, tools: TextTools) -> TextEvidence:
    """Everything the text in ``image`` says about where it was taken (empty evidence when it has no
    readable text)."""
    regions = tools.reader.read(image)
    if not regions:
        return TextEvidence(reader=tools.reader.name)
    text = " ".join(region.text for region in regions)
    languages = tools.languages.languages(text)
    return TextEvidence(
        regions=regions,
        scripts=scripts_of(text),
        languages=languages,
        country_prior=tools.languages.country_prior(languages),
        places=tools.gazetteer.find_in_text(regions),
        reader=tools.reader.name,
    )
