"""The shared data model: JSON round trips, validation, schema version."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from geosleuth.types import (
    SCHEMA_VERSION,
    Candidate,
    CandidateSource,
    Clue,
    ExifInfo,
    GalleryNeighbor,
    GPSCandidate,
    Hypothesis,
    ImageRef,
    Place,
    Prediction,
    PromptRecord,
    ReasoningFailure,
    ReasoningResult,
    RetrievalResult,
    StepFailure,
    Trace,
    TraceEvent,
)

IMAGE = ImageRef(path="photos/a.jpg", sha256="ab" * 32, width=640, height=480,
                 exif=ExifInfo(gps={"lat": 38.7, "lon": -9.1}, taken_at="2024:05:01 10:00:00"))
PLACE = Place(continent="Europe", country_code="PT", country="Portugal", admin1="Lisbon", city="Sintra",
              city_distance_km=1.5)
HYPOTHESIS = Hypothesis(
    clues=[Clue(observation="Portuguese on a sign", implication="Portugal or Brazil")],
    continent="Europe", country="Portugal", country_code="PT", region="Lisbon", city="Sintra",
    lat=38.8, lon=-9.38, confidence=0.6, raw_text='{"latitude": 38.8}', template_id="geo_reasoning",
    template_hash="deadbeef", model="tiny", variant="neighbors-5", sample_index=1,
)
CANDIDATE = Candidate(lat=38.8, lon=-9.38, source=CandidateSource.VLM, source_ref="neighbors-5#1",
                      scores={"geoclip": 0.7, "vlm_agreement": 0.5}, score=1.2, confidence=0.4, place=PLACE)


def _round_trip(obj):
    text = obj.model_dump_json()
    json.loads(text)  # plain JSON
    back = type(obj).model_validate_json(text)
    assert back == obj
    return back


@pytest.mark.parametrize(
    "obj",
    [
        IMAGE,
        PLACE,
        GalleryNeighbor(id="n1", lat=1.0, lon=2.0, similarity=0.9, metadata={"AUTHOR": "x", "year": 2010},
                        place=PLACE),
        GPSCandidate(lat=1.0, lon=2.0, similarity=0.3, probability=0.01),
        RetrievalResult(neighbors=[GalleryNeighbor(id="n", lat=0.5, lon=0.5, similarity=0.1)],
                        sources=["gallery", "gps-gallery"]),
        HYPOTHESIS,
        ReasoningFailure(variant="neighbors-0", template_id="t", template_hash="h", model="m",
                         error="missing latitude", raw_text="{}"),
        ReasoningResult(hypotheses=[HYPOTHESIS], prompts=[PromptRecord(template_id="t", template_hash="h",
                                                                       variant="v", model="m")]),
        CANDIDATE,
        Prediction(image=IMAGE, lat=38.8, lon=-9.38, place=PLACE, confidence=0.4, alternatives=[CANDIDATE],
                   clues=HYPOTHESIS.clues, sources_used=["gps-gallery", "vlm"],
                   failures=[StepFailure(step="retrieve", error="no gallery configured")]),
        Prediction(image=IMAGE, failure_reason="image could not be loaded"),
        Trace(trace_id="t1", image=IMAGE, config_hash="abc", models={"vlm": "tiny"},
              events=[TraceEvent(step="perceive", started_at=1.0, duration_s=0.1, outputs={"w": 640}),
                      TraceEvent(step="retrieve", started_at=2.0, duration_s=0.2, error="boom")]),
    ],
    ids=lambda o: type(o).__name__,
)
def test_json_round_trip(obj):
    _round_trip(obj)


def test_records_carry_the_schema_version():
    pred = Prediction(image=IMAGE, lat=1, lon=2)
    assert json.loads(pred.model_dump_json())["schema_version"] == SCHEMA_VERSION


def test_a_prediction_without_coordinate_must_say_why():
    with pytest.raises(ValidationError, match="failure_reason"):
        Prediction(image=IMAGE)
    assert not Prediction(image=IMAGE, failure_reason="VLM down, no gallery").ok


def test_half_a_coordinate_is_rejected():
    with pytest.raises(ValidationError, match="both"):
        Prediction(image=IMAGE, lat=10.0)


@pytest.mark.parametrize("lat", [90.01, -91, float("inf")])
def test_out_of_range_coordinates_are_rejected_everywhere(lat):
    for make in (
        lambda: Prediction(image=IMAGE, lat=lat, lon=0.0),
        lambda: Candidate(lat=lat, lon=0.0, source="user"),
        lambda: Hypothesis.model_validate(HYPOTHESIS.model_dump() | {"lat": lat}),
    ):
        with pytest.raises(ValidationError):
            make()


def test_hypothesis_confidence_must_be_a_probability():
    with pytest.raises(ValidationError):
        Hypothesis.model_validate(HYPOTHESIS.model_dump() | {"confidence": 1.5})


def test_unknown_fields_are_errors_not_silently_kept():
    with pytest.raises(ValidationError, match="extra"):
        Prediction.model_validate({"image": {"path": "a"}, "lat": 1, "lon": 2, "latitude": 3})


def test_trace_events_must_be_ordered():
    with pytest.raises(ValidationError, match="order"):
        Trace(trace_id="t", image=IMAGE, config_hash="c",
              events=[TraceEvent(step="b", started_at=2, duration_s=0), TraceEvent(step="a", started_at=1,
                                                                                   duration_s=0)])


def test_place_hierarchy_skips_unknown_and_repeated_levels():
    assert Place(continent="Europe", country="Monaco", admin1="Monaco", city="Monaco").hierarchy() == \
        "Europe > Monaco"
    assert Place().hierarchy() == "unknown place"
