"""The tool catalogue: every tool's JSON schema asks for what the tool accepts, the registry rejects bad
calls with a ToolError naming the problem, and ``submit`` turns the answer schema into an answer."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jsonschema
import pytest
import xgrammar
from PIL import Image

from geosleuth.agent.tools.catalog import default_tools
from geosleuth.agent.tools.registry import ToolError
from geosleuth.types import Abstention, Hypothesis

ANSWER = {
    "clues": [{"observation": "blue street signs", "implication": "Portugal"}],
    "continent": "Europe", "country": "Portugal", "region": "Lisbon", "city": "Lisbon",
    "latitude": 38.72, "longitude": -9.14, "confidence": 0.7, "cannot_tell_because": None,
}
ABSTENTION = {**ANSWER, "latitude": None, "longitude": None, "cannot_tell_because": "only sky is visible"}
HALF_COORDINATE = {**ANSWER, "longitude": None}

# tool -> (a correct call, a wrong call)
CALLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "zoom": ({"box": {"x0": 0.1, "y0": 0.2, "x1": 0.6, "y1": 0.9}}, {"box": {"x0": 0.1, "y0": 0.2, "x1": 1.5}}),
    "read_text": ({"box": None}, {"box": "the top half"}),
    "search_gallery": ({"area": {"country": "France"}, "k": 5}, {"k": 0}),
    "geoclip_candidates": ({"area": {"lat": 48.8, "lon": 2.3, "radius_km": 300}, "k": 3}, {"k": "many"}),
    "score_location": ({"lat": 48.85, "lon": 2.35}, {"lat": 91.0, "lon": 2.35}),
    "reverse_geocode": ({"lat": -33.87, "lon": 151.21}, {"lat": -33.87}),
    "lookup_place": ({"name": "Lisboa"}, {"name": ""}),
    "submit": ({"answer": ANSWER}, {"answer": HALF_COORDINATE}),
}


@pytest.fixture
def full_context(make_context, text_tools) -> Any:
    return make_context(Image.new("RGB", (64, 48), (40, 70, 200)), text_tools=text_tools)


def test_every_configured_tool_is_offered_with_submit_last(full_context) -> None:
    registry = default_tools(full_context.resources)
    assert registry.names() == ["zoom", "read_text", "search_gallery", "geoclip_candidates", "score_location",
                                "reverse_geocode", "lookup_place", "submit"]


def test_tools_without_their_resource_are_left_out(make_context) -> None:
    context = make_context(Image.new("RGB", (64, 48)), text_tools=None, store=False, gps=False)
    names = default_tools(context.resources).names()
    assert names == ["zoom", "score_location", "reverse_geocode", "lookup_place", "submit"]


@pytest.mark.parametrize("name", list(CALLS))
def test_each_schema_is_valid_json_schema_that_accepts_a_correct_call_and_rejects_a_wrong_one(
    full_context, name: str
) -> None:
    tool = default_tools(full_context.resources).get(name)
    schema = tool.parameters_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    xgrammar.Grammar.from_json_schema(json.dumps(schema))  # constrained decoding (in-process backend) takes it
    assert schema["type"] == "object"  # tool-calling APIs need an object at the top
    good, bad = CALLS[name]
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    assert tool.description and len(tool.description) < 300


def test_every_correct_call_gives_short_text_and_json_data_for_the_trace(full_context) -> None:
    registry = default_tools(full_context.resources)
    for name, (good, _) in CALLS.items():
        observation = registry.call(name, good, full_context)
        assert 0 < len(observation.text) <= 2000, name
        json.dumps(observation.data, allow_nan=False)  # the trace stores it as strict JSON
        assert (observation.answer is not None) == (name == "submit")
        assert bool(observation.images) == (name == "zoom")


@pytest.mark.parametrize("name", list(CALLS))
def test_the_registry_rejects_the_wrong_call_with_a_tool_error(full_context, name: str) -> None:
    registry = default_tools(full_context.resources)
    with pytest.raises(ToolError, match=f"^{name}: invalid arguments"):
        registry.call(name, CALLS[name][1], full_context)


def test_an_unknown_tool_is_a_tool_error_listing_the_tools(full_context) -> None:
    with pytest.raises(ToolError, match="no tool 'teleport'.*zoom"):
        default_tools(full_context.resources).call("teleport", {}, full_context)


def test_submit_accepts_an_answer_and_records_it_as_a_hypothesis(full_context) -> None:
    observation = default_tools(full_context.resources).call("submit", {"answer": ANSWER}, full_context)
    answer = observation.answer
    assert isinstance(answer, Hypothesis)
    assert (answer.lat, answer.lon, answer.country_code, answer.confidence) == (38.72, -9.14, "PT", 0.7)
    assert answer.clues[0].observation == "blue street signs"
    assert answer.variant == "tools" and answer.model == "none" and answer.echo_of is None
    assert "38.7200, -9.1400" in observation.text


def test_submit_accepts_an_abstention(full_context) -> None:
    observation = default_tools(full_context.resources).call("submit", {"answer": ABSTENTION}, full_context)
    assert isinstance(observation.answer, Abstention)
    assert observation.answer.reason == "only sky is visible"
    assert "cannot tell" in observation.text


def test_submit_rejects_a_half_coordinate_and_an_abstention_without_reason(full_context) -> None:
    registry = default_tools(full_context.resources)
    with pytest.raises(ToolError, match="both latitude and longitude"):
        registry.call("submit", {"answer": HALF_COORDINATE}, full_context)
    with pytest.raises(ToolError, match="cannot_tell_because"):
        registry.call("submit", {"answer": {**ABSTENTION, "cannot_tell_because": None}}, full_context)


def test_submit_marks_an_answer_that_repeats_a_tool_candidate_as_an_echo(full_context) -> None:
    registry = default_tools(full_context.resources)
    looked_up = registry.call("lookup_place", {"name": "Lisboa"}, full_context)
    context = dataclasses.replace(full_context, candidates=looked_up.candidates)
    answer = registry.call("submit", {"answer": ANSWER}, context).answer
    assert isinstance(answer, Hypothesis)
    assert answer.echo_of is not None and "lookup_place:geonames-2267057" in answer.echo_of
    assert answer.shown_coordinates == len(looked_up.candidates)
