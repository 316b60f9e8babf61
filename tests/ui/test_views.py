"""What the page is given to draw: statuses that never hide a failure, map layers, EXIF distance."""

from __future__ import annotations

import pytest

from geosleuth.constraints import Constraint
from geosleuth.geo import geodesic_km
from geosleuth.types import (
    Candidate,
    CandidateSource,
    Coordinate,
    ExifInfo,
    GalleryNeighbor,
    GPSCandidate,
    Hypothesis,
    ImageRef,
    LanguageGuess,
    LevelConfidence,
    PlaceMatch,
    Prediction,
    RetrievalResult,
    StepFailure,
    TextEvidence,
    TextRegion,
    Trace,
    TraceEvent,
)
from geosleuth.ui.views import answer_view, prediction_view

IMAGE = ImageRef(path="photos/porto.jpg", exif=ExifInfo(gps=Coordinate(lat=41.1496, lon=-8.6110)))


def _prediction(**fields) -> Prediction:
    alternatives = [Candidate(lat=38.72, lon=-9.14, source=CandidateSource.GPS_GALLERY, score=0.8, confidence=0.7),
                    Candidate(lat=40.41, lon=-3.70, source=CandidateSource.GPS_GALLERY, score=0.2, confidence=0.3)]
    return Prediction(image=IMAGE, **{"lat": 38.72, "lon": -9.14, "confidence": 0.7, "alternatives": alternatives,
                                      **fields})


def test_a_failed_step_or_a_missing_answer_shows_in_the_status():
    assert prediction_view(_prediction())["status"] == "ok"
    degraded = prediction_view(
        _prediction(failures=[StepFailure(step="reason", error="VLM down")], missing_stages=["vlm"])
    )
    assert degraded["status"] == "degraded" and degraded["failures"][0]["error"] == "VLM down"
    assert degraded["missing_stages"] == ["vlm"]
    failed = prediction_view(Prediction(image=IMAGE, failure_reason="no source proposed a candidate location"))
    assert failed["status"] == "failed" and failed["lat"] is None
    assert failed["failure_reason"] == "no source proposed a candidate location"


def test_layers_come_from_the_prediction_and_its_trace():
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id="mp16/1.jpg", lat=41.0, lon=-8.0, similarity=0.9)],
        gps_candidates=[GPSCandidate(lat=1.0, lon=2.0, similarity=0.5), GPSCandidate(lat=3.0, lon=4.0, similarity=0.4)],
    )
    hypothesis = Hypothesis(country="Portugal", city="Lisbon", lat=38.7, lon=-9.1, confidence=0.6, raw_text="{}",
                            template_id="geo_reasoning", template_hash="abcdef0123456789", model="tiny",
                            variant="neighbors-0")
    prediction = _prediction()
    trace = Trace(trace_id="t", image=IMAGE, config_hash="c", prediction=prediction, events=[
        TraceEvent(step="retrieve", started_at=1.0, duration_s=0.5, outputs=retrieval.model_dump(mode="json")),
        TraceEvent(step="reason", started_at=1.5, duration_s=2.0,
                   outputs={"hypotheses": [hypothesis.model_dump(mode="json")]}),
    ])
    view = answer_view(prediction, trace, [Constraint.within(-12.05, -77.04, 300.0, "Lima (PE)")])
    counts = {name: len(points) for name, points in view["layers"].items()}
    assert counts == {"prediction": 1, "alternatives": 2, "neighbors": 1, "gps": 2, "vlm": 1, "exif": 1, "hints": 1}
    assert view["layers"]["hints"][0]["radius_km"] == 300.0
    assert view["hypotheses"][0]["place"] == "Portugal > Lisbon"
    assert [a["rank"] for a in view["alternatives"]] == [1, 2]
    assert [s["step"] for s in view["steps"]] == ["retrieve", "reason"]
    expected = float(geodesic_km(41.1496, -8.6110, 38.72, -9.14))
    assert view["exif"]["distance_km"] == pytest.approx(expected)


def test_without_a_trace_the_answer_still_shows():
    view = answer_view(_prediction(), None)
    assert view["prediction"]["lat"] == 38.72
    assert len(view["layers"]["alternatives"]) == 2 and view["layers"]["gps"] == []


def test_per_level_probabilities_are_listed_with_their_calibration():
    levels = LevelConfidence(country=0.9, region=0.6, city=0.3, within_25km=0.25, within_200km=0.5,
                             calibration="default@0123456789ab")
    view = prediction_view(_prediction(levels=levels, confidence=0.25))
    assert view["levels"] == {
        "probabilities": [{"level": "country", "p": 0.9}, {"level": "region", "p": 0.6}, {"level": "city", "p": 0.3},
                          {"level": "≤ 25 km", "p": 0.25}, {"level": "≤ 200 km", "p": 0.5}],
        "calibration": "default@0123456789ab",
    }
    assert "levels" not in view["more"] and prediction_view(_prediction())["levels"] is None


def test_the_text_read_in_the_photo_is_shown_with_the_places_it_names():
    lisbon = PlaceMatch(text="LISBOA", name="Lisbon", matched_name="Lisboa", geonameid=2267057, country_code="PT",
                        lat=38.72, lon=-9.13, population=517802, similarity=1.0, weight=1.0)
    text = TextEvidence(regions=[TextRegion(text="LISBOA", confidence=0.97, box=(10, 10, 90, 30))],
                        languages=[LanguageGuess(language="pt", probability=0.8)], places=[lisbon], reader="rapidocr")
    view = prediction_view(_prediction(text=text))
    assert view["text"]["summary"] == text.summary() and '"LISBOA"' in view["text"]["summary"]
    assert view["text"]["places"] == [{"read": "LISBOA", "name": "Lisbon", "country_code": "PT", "lat": 38.72,
                                       "lon": -9.13, "population": 517802, "similarity": 1.0}]
    assert view["text"]["languages"] == [{"language": "pt", "p": 0.8}]
    assert "text" not in view["more"]
    assert prediction_view(_prediction())["text"] is None  # OCR off: nothing read, not "no text"
