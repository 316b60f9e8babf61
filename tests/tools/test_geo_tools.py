"""reverse_geocode, lookup_place and score_location with the real geocoder, gazetteer and fusion."""

from __future__ import annotations

import dataclasses

import pytest

from geosleuth.agent.tools.catalog import default_tools
from geosleuth.agent.tools.geo_tools import PointArguments, ScoreLocationTool
from geosleuth.agent.tools.registry import ToolError
from geosleuth.constraints import Constraint
from geosleuth.testing.synthetic import synthetic_photo
from geosleuth.types import CandidateSource

MID_PACIFIC = (0.0, -140.0)


@pytest.fixture
def context(make_context, text_tools):
    return make_context(synthetic_photo("JP", seed=999, size=64), text_tools=text_tools)


def test_reverse_geocode_names_the_place_or_the_sea(context) -> None:
    registry = default_tools(context.resources)
    sydney = registry.call("reverse_geocode", {"lat": -33.8688, "lon": 151.2093}, context)
    assert "Oceania > Australia > New South Wales" in sydney.text
    assert sydney.data["place"]["country_code"] == "AU"
    sea = registry.call("reverse_geocode", {"lat": MID_PACIFIC[0], "lon": MID_PACIFIC[1]}, context)
    assert "at sea" in sea.text and sea.data["place"]["at_sea"] is True


def test_lookup_place_finds_local_names_as_candidates(context) -> None:
    observation = default_tools(context.resources).call("lookup_place", {"name": "München"}, context)
    munich = observation.candidates[0]
    assert munich.source is CandidateSource.VLM and munich.source_ref == "lookup_place:geonames-2867714"
    assert abs(munich.lat - 48.14) < 0.1 and abs(munich.lon - 11.58) < 0.1
    assert "Munich (DE" in observation.text and "pop." in observation.text


def test_lookup_place_misspelt_is_matched_fuzzily_and_says_so(context) -> None:
    observation = default_tools(context.resources).call("lookup_place", {"name": "Lisbonn"}, context)
    assert observation.candidates[0].source_ref == "lookup_place:geonames-2267057"
    assert "fuzzy match" in observation.text


def test_a_gazetteer_miss_gives_no_candidate_and_says_so(context) -> None:
    observation = default_tools(context.resources).call("lookup_place", {"name": "Xqvrtzblomquaft"}, context)
    assert observation.candidates == ()
    assert observation.text.startswith("No place called 'Xqvrtzblomquaft' is known")


def test_score_location_is_higher_where_the_evidence_is(context) -> None:
    registry = default_tools(context.resources)
    neighbour = context.retrieval.neighbors[0]
    near = registry.call("score_location", {"lat": neighbour.lat, "lon": neighbour.lon}, context)
    far = registry.call("score_location", {"lat": MID_PACIFIC[0], "lon": MID_PACIFIC[1]}, context)
    assert near.data["score"] > far.data["score"]
    # Far from every item each source is at its uniform floor, and the text says so.
    assert far.data["scores"] == pytest.approx(far.data["floors"])
    assert far.text.count("no evidence nearby") == len(far.data["floors"]) >= 2
    assert far.data["log10_ratio_to_best"] < 0 and far.data["cluster_posterior"] < near.data["cluster_posterior"]
    assert far.data["score"] == pytest.approx(sum(far.data["weights"][s] * v for s, v in far.data["scores"].items()))
    assert "pooled log-density" in far.text and "orders of magnitude" in far.text


def test_score_location_outside_the_users_constraint_gets_no_weight(context) -> None:
    in_japan = dataclasses.replace(context, constraints=(Constraint.in_country("JP", "Japan"),))
    observation = default_tools(context.resources).call("score_location", {"lat": 48.8566, "lon": 2.3522}, in_japan)
    assert observation.data["inside"] is False
    assert "outside the user's constraint (in Japan)" in observation.text


def test_score_location_without_any_evidence_is_a_tool_error(make_context) -> None:
    bare = make_context(synthetic_photo("FR", seed=3, size=64), store=False, gps=False)
    with pytest.raises(ToolError, match="nothing to score against"):
        ScoreLocationTool().run(PointArguments(lat=10.0, lon=10.0), bare)
