"""search_gallery and geoclip_candidates over a real FAISS gallery, real GeoCLIP heads and the 2K GPS gallery."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geosleuth.agent.tools.catalog import default_tools
from geosleuth.agent.tools.index_tools import GeoclipCandidatesTool, SearchArguments, SearchGalleryTool
from geosleuth.agent.tools.registry import ToolError
from geosleuth.constraints import Constraint
from geosleuth.geo import haversine_km
from geosleuth.testing.synthetic import synthetic_photo
from geosleuth.types import CandidateSource

PARIS = (48.8566, 2.3522)


@pytest.fixture
def context(make_context):
    return make_context(synthetic_photo("JP", seed=999, size=64))


def test_search_gallery_on_the_whole_earth_is_the_retrieve_stages_search(context) -> None:
    observation = default_tools(context.resources).call("search_gallery", {"k": 5}, context)
    assert [n["id"] for n in observation.data["neighbors"]] == [n.id for n in context.retrieval.neighbors]
    assert [(c.source, c.source_ref) for c in observation.candidates] == [
        (CandidateSource.RETRIEVAL, n.id) for n in context.retrieval.neighbors
    ]
    assert all(c.place is not None and c.place.country_code for c in observation.candidates)
    assert "on the whole Earth" in observation.text and "similarity" in observation.text


def test_search_gallery_inside_a_country_returns_only_that_countrys_photos(context) -> None:
    observation = default_tools(context.resources).call(
        "search_gallery", {"area": {"country": "Brazil"}, "k": 3}, context
    )
    assert len(observation.candidates) == 3
    assert {c.place.country_code for c in observation.candidates} == {"BR"}
    assert "in Brazil" in observation.text


def test_search_gallery_never_returns_an_excluded_photo(context) -> None:
    first = context.retrieval.neighbors[0].id
    excluded = dataclasses.replace(context, exclude_ids=(first,))
    observation = default_tools(context.resources).call("search_gallery", {"k": 5}, excluded)
    assert first not in [c.source_ref for c in observation.candidates]


def test_the_users_constraint_applies_to_every_search(context) -> None:
    in_kenya = dataclasses.replace(context, constraints=(Constraint.in_country("KE", "Kenya"),))
    registry = default_tools(context.resources)
    gallery = registry.call("search_gallery", {"k": 4}, in_kenya)
    assert {c.place.country_code for c in gallery.candidates} == {"KE"}
    both = registry.call("search_gallery", {"area": {"continent": "Europe"}, "k": 4}, in_kenya)
    assert both.candidates == () and "No gallery photo in Kenya and in Europe" in both.text


def test_an_unknown_area_is_a_tool_error_naming_it(context) -> None:
    registry = default_tools(context.resources)
    with pytest.raises(ToolError, match="unknown country 'Atlantis'"):
        registry.call("search_gallery", {"area": {"country": "Atlantis"}}, context)
    with pytest.raises(ToolError, match="unknown continent 'Middle Earth'"):
        registry.call("geoclip_candidates", {"area": {"continent": "Middle Earth"}}, context)
    with pytest.raises(ToolError, match="exactly one of"):
        registry.call("search_gallery", {"area": {"country": "France", "continent": "Europe"}}, context)
    with pytest.raises(ToolError, match="a circle needs all of lat, lon and radius_km"):
        registry.call("geoclip_candidates", {"area": {"lat": 10.0, "lon": 20.0}}, context)


def test_geoclip_candidates_on_the_whole_earth_are_the_retrieve_stages(context) -> None:
    observation = default_tools(context.resources).call("geoclip_candidates", {"k": 10}, context)
    retrieved = context.retrieval.gps_candidates
    assert [(c.lat, c.lon) for c in observation.candidates] == [(g.lat, g.lon) for g in retrieved]
    # The same points keep the pipeline's keys, so the fusion leaves each one's own evidence out of its score.
    assert [c.source_ref for c in observation.candidates] == [f"gps-{i}" for i in range(10)]
    assert all(c.source is CandidateSource.GPS_GALLERY for c in observation.candidates)
    assert "probability" in observation.text


def test_geoclip_candidates_inside_a_circle_lie_inside_it(context) -> None:
    observation = default_tools(context.resources).call(
        "geoclip_candidates", {"area": {"lat": PARIS[0], "lon": PARIS[1], "radius_km": 400}, "k": 5}, context
    )
    assert len(observation.candidates) == 5
    lat = np.array([c.lat for c in observation.candidates])
    lon = np.array([c.lon for c in observation.candidates])
    assert (haversine_km(lat, lon, *PARIS) <= 400).all()
    sims = [g["similarity"] for g in observation.data["candidates"]]
    assert sims == sorted(sims, reverse=True)
    assert all(c.source_ref.startswith(("gps-", "gps@")) for c in observation.candidates)


def test_index_tools_without_their_index_say_which_setting_to_set(make_context) -> None:
    bare = make_context(synthetic_photo("FR", seed=3, size=64), store=False, gps=False)
    with pytest.raises(ToolError, match=r"no image gallery is configured \(set index.gallery\)"):
        SearchGalleryTool().run(SearchArguments(), bare)
    with pytest.raises(ToolError, match=r"no GPS gallery is configured \(set index.gps_gallery\)"):
        GeoclipCandidatesTool().run(SearchArguments(), bare)
