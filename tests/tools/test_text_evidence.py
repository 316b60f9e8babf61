"""Text in the photo as evidence, with the real OCR models, lingua and GeoNames (no VLM involved)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from geosleuth.agent.tools.gazetteer import Gazetteer, fuzzy_cutoff
from geosleuth.agent.tools.language import scripts_of
from geosleuth.agent.tools.text_evidence import read_text_evidence


def test_a_sign_naming_a_city_gives_that_city(text_tools, render_sign) -> None:
    evidence = read_text_evidence(render_sign("Lisboa  12 km"), text_tools)
    assert "Lisboa" in [region.text for region in evidence.regions]
    best = evidence.places[0]
    assert (best.name, best.country_code, best.matched_name) == ("Lisbon", "PT", "Lisboa")
    assert best.similarity == 1.0
    assert abs(best.lat - 38.72) < 0.1 and abs(best.lon + 9.13) < 0.1


def test_local_spelling_and_language_point_to_the_country(text_tools, render_sign) -> None:
    evidence = read_text_evidence(render_sign("München Hbf", "Bahnhofstraße 5"), text_tools)
    assert evidence.places and evidence.places[0].country_code == "DE"
    assert evidence.languages[0].language == "de"
    assert max(evidence.country_prior, key=evidence.country_prior.get) == "DE"
    assert sum(evidence.country_prior.values()) == pytest.approx(1.0, abs=1e-3)
    assert evidence.scripts == ["LATIN"]


def test_an_image_without_text_gives_no_evidence(text_tools) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(90, 140, size=(300, 400, 3), dtype=np.uint8))
    evidence = read_text_evidence(noise, text_tools)
    assert evidence.regions == [] and evidence.places == [] and evidence.country_prior == {}


def test_text_that_names_no_place_gives_no_candidate(text_tools, render_sign) -> None:
    evidence = read_text_evidence(render_sign("Xqvrtz Blomquaft"), text_tools)
    assert evidence.regions  # it was read ...
    assert evidence.places == []  # ... and matched nothing


def test_reading_inside_a_box_sees_only_that_part(text_tools, render_sign) -> None:
    image = render_sign("Lisboa", "Porto")
    top_half = text_tools.reader.read(image, box=(0, 0, image.width, 140))
    assert [region.text for region in top_half] == ["Lisboa"]
    assert top_half[0].box[1] >= 40  # boxes are in the whole image's coordinates
    with pytest.raises(ValueError, match="holds no pixels"):
        text_tools.reader.read(image, box=(10, 10, 10, 10))


def test_gazetteer_alternate_names_fuzzy_matches_and_short_names(text_tools) -> None:
    gazetteer: Gazetteer = text_tools.gazetteer
    assert gazetteer.lookup("München")[0].name == "Munich"
    assert gazetteer.lookup("MUNCHEN")[0].name == "Munich"  # case and accents folded
    fuzzy = gazetteer.lookup("Lisbonn")  # an OCR-doubled letter
    assert fuzzy[0].name == "Lisbon" and 0.9 <= fuzzy[0].similarity < 1.0
    assert gazetteer.lookup("Lisbonn", fuzzy=False) == []
    assert gazetteer.lookup("Bar") == []  # three letters match too much ordinary text
    paris = gazetteer.lookup("Paris")
    assert paris[0].country_code == "FR" and paris[0].weight > 0.5  # the most populous Paris carries the name
    assert sum(match.weight for match in paris) <= 1.0 + 1e-9


def test_fuzzy_cutoff_needs_longer_words_for_looser_matches() -> None:
    assert fuzzy_cutoff(5) is None
    assert fuzzy_cutoff(6) == 90.0
    assert fuzzy_cutoff(12) == 85.0


def test_scripts_are_counted_by_letters() -> None:
    assert scripts_of("Улица Ленина 5") == ["CYRILLIC"]
    assert scripts_of("東京駅 Tokyo") == ["LATIN", "HAN"]
    assert scripts_of("ΟΔΟΣ ΕΡΜΟΥ") == ["GREEK"]
    assert scripts_of("12 34 !") == []
