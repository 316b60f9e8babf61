"""What the page is given to draw: statuses that never hide a failure, map layers, EXIF distance."""

from __future__ import annotations

import pytest

from geosleuth.geo import geodesic_km
from geosleuth.types import (
    Candidate,
    CandidateSource,
    Coordinate,
    ExifInfo,
    GPSCandidate,
    ImageRef,
    Prediction,
    RetrievalResult,
    StepFailure,
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
    failed = prediction_view(Prediction(image=IMAGE, failure_reason="no source proposed a candidate location"))
    assert failed["status"] == "failed" and failed["lat"] is None
    assert failed["failure_reason"] == "no source proposed a candidate location"


def test_layers_come_from_the_prediction_and_its_trace():
    retrieval = RetrievalResult(gps_candidates=[GPSCandidate(lat=1.0, lon=2.0, similarity=0.5),
                                                GPSCandidate(lat=3.0, lon=4.0, similarity=0.4)])
    prediction = _prediction()
    trace = Trace(trace_id="t", image=IMAGE, config_hash="c", prediction=prediction, events=[
        TraceEvent(step="retrieve", started_at=1.0, duration_s=0.5, outputs=retrieval.model_dump(mode="json")),
    ])
    view = answer_view(prediction, trace)
    counts = {name: len(points) for name, points in view["layers"].items()}
    assert counts == {"prediction": 1, "alternatives": 2, "neighbors": 0, "gps": 2, "vlm": 0, "exif": 1, "hints": 0}
    assert [a["rank"] for a in view["alternatives"]] == [1, 2]
    assert view["steps"] == [{"step": "retrieve", "duration_s": 0.5, "error": None}]
    expected = float(geodesic_km(41.1496, -8.6110, 38.72, -9.14))
    assert view["exif"]["distance_km"] == pytest.approx(expected)


def test_without_a_trace_the_answer_still_shows():
    view = answer_view(_prediction(), None)
    assert view["prediction"]["lat"] == 38.72
    assert len(view["layers"]["alternatives"]) == 2 and view["layers"]["gps"] == []
