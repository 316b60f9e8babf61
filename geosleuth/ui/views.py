"""Predictions, traces and batch results as the plain JSON the page draws.

The page never parses a trace: it gets map layers and tables built here from typed objects (the
trace read through :func:`geosleuth.agent.trace.digest`, the one reader of traces). Text from
the model goes out as JSON strings and the page inserts it as text, never as HTML.

Prediction fields this module does not know (statuses, per-level confidences, ...) are passed on
as ``more``: the page shows them as name/value rows, so a new field is visible without a change here.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from geosleuth.agent.trace import digest
from geosleuth.geo import geodesic_km
from geosleuth.types import Candidate, Place, Prediction, TextEvidence, Trace

if TYPE_CHECKING:
    from geosleuth.constraints import Constraint
    from geosleuth.ui.sessions import SessionState, SessionSummary

# Prediction fields drawn by dedicated parts of the page; every other field goes to "more".
_SHOWN_FIELDS = frozenset({
    "schema_version", "image", "lat", "lon", "place", "confidence", "alternatives", "clues", "sources_used",
    "failures", "failure_reason", "trace_id", "status", "missing_stages", "levels",
    "evidence",  # the fusion's clusters and per-source evidence: the Trace tab and the downloads carry it
    "text",
})
# Per-level calibrated probabilities, as the page labels them (LevelConfidence's fields).
LEVEL_LABELS = {"country": "country", "region": "region", "city": "city", "within_25km": "≤ 25 km",
                "within_200km": "≤ 200 km"}
LAYERS = ("prediction", "alternatives", "neighbors", "gps", "vlm", "exif", "hints")


def _place(place: Place | None) -> dict[str, Any] | None:
    if place is None:
        return None
    return {**place.model_dump(mode="json"), "hierarchy": place.hierarchy()}


def _point(lat: float, lon: float, label: str, **extra: Any) -> dict[str, Any]:
    return {"lat": lat, "lon": lon, "label": label, **extra}


def _alternative(rank: int, candidate: Candidate) -> dict[str, Any]:
    return {
        "rank": rank,
        "lat": candidate.lat,
        "lon": candidate.lon,
        "place": candidate.place.hierarchy() if candidate.place else None,
        "source": candidate.source.value,
        "source_ref": candidate.source_ref,
        "score": candidate.score,
        "confidence": candidate.confidence,
        "scores": candidate.scores,
    }


def text_view(text: TextEvidence | None) -> dict[str, Any] | None:
    """What the text in the photo says (None: OCR was off): the one-line summary the CLI prints, the
    places it names and the languages it is likely in."""
    if text is None:
        return None
    return {
        "summary": text.summary(),
        "lines": [{"text": r.text, "confidence": r.confidence} for r in text.regions],
        "places": [{"read": m.text, "name": m.name, "country_code": m.country_code, "lat": m.lat, "lon": m.lon,
                    "population": m.population, "similarity": m.similarity} for m in text.places],
        "languages": [{"language": g.language, "p": g.probability} for g in text.languages],
        "reader": text.reader,
    }


def status_of(prediction: Prediction) -> str:
    """``ok`` / ``degraded`` (a required stage gave nothing) / ``failed`` (no coordinate): the prediction's own."""
    return prediction.status.value


def prediction_view(prediction: Prediction) -> dict[str, Any]:
    dumped = prediction.model_dump(mode="json")
    return {
        "ok": prediction.ok,
        "status": status_of(prediction),
        "lat": prediction.lat,
        "lon": prediction.lon,
        "place": _place(prediction.place),
        "confidence": prediction.confidence,
        "failure_reason": prediction.failure_reason,
        "failures": [f.model_dump(mode="json") for f in prediction.failures],
        "sources_used": list(prediction.sources_used),
        "image": prediction.image.path,
        "trace_id": prediction.trace_id,
        "missing_stages": list(prediction.missing_stages),
        "levels": None if prediction.levels is None else {
            "probabilities": [{"level": label, "p": getattr(prediction.levels, key)}
                              for key, label in LEVEL_LABELS.items()],
            "calibration": prediction.levels.calibration,
        },
        "text": text_view(prediction.text),
        # Fields this view does not know yet, shown as name/value rows.
        "more": {key: value for key, value in dumped.items() if key not in _SHOWN_FIELDS and value is not None},
    }


def _constraint(constraint: Constraint) -> dict[str, Any]:
    return constraint.model_dump(mode="json")


def answer_view(prediction: Prediction | None, trace: Trace | None,
                constraints: list[Constraint] | None = None) -> dict[str, Any]:
    """Everything the answer panel and the map show for one prediction (and its trace, when known)."""
    layers: dict[str, list[dict[str, Any]]] = {name: [] for name in LAYERS}
    view: dict[str, Any] = {"prediction": None, "exif": None, "alternatives": [], "clues": [], "hypotheses": [],
                            "steps": [], "layers": layers, "constraints": []}
    for constraint in constraints or []:
        view["constraints"].append(_constraint(constraint))
        if constraint.kind == "circle" and constraint.lat is not None and constraint.lon is not None:
            layers["hints"].append(_point(constraint.lat, constraint.lon, constraint.label,
                                          radius_km=constraint.radius_km))
    if prediction is None:
        return view
    d = digest(trace) if trace is not None else None
    view["prediction"] = prediction_view(prediction)
    if prediction.lat is not None and prediction.lon is not None:
        layers["prediction"].append(_point(prediction.lat, prediction.lon, "answer: " + (
            prediction.place.hierarchy() if prediction.place else "unknown place")))
    view["alternatives"] = [_alternative(i, c) for i, c in enumerate(prediction.alternatives, start=1)]
    layers["alternatives"] = [_point(a["lat"], a["lon"], f"#{a['rank']} {a['place'] or ''}".strip(), rank=a["rank"])
                              for a in view["alternatives"]]
    view["clues"] = [c.model_dump(mode="json") for c in (prediction.clues or (d.clues if d else []))]
    exif = prediction.image.exif.gps if prediction.image.exif else None
    if exif is None and d is not None:
        exif = d.exif_gps
    if exif is not None:
        distance = None
        if prediction.lat is not None and prediction.lon is not None:
            distance = float(geodesic_km(exif.lat, exif.lon, prediction.lat, prediction.lon))
        view["exif"] = {"lat": exif.lat, "lon": exif.lon, "distance_km": distance}
        layers["exif"].append(_point(exif.lat, exif.lon, "EXIF GPS (from the file)"))
    if d is not None:
        view["hypotheses"] = [
            {"variant": h.variant, "sample": h.sample_index, "lat": h.lat, "lon": h.lon, "confidence": h.confidence,
             "place": " > ".join(p for p in (h.continent, h.country, h.region, h.city) if p) or None,
             "model": h.model, "template": f"{h.template_id}@{h.template_hash[:8]}"}
            for h in d.hypotheses
        ]
        layers["vlm"] = [_point(h["lat"], h["lon"], f"VLM {h['variant']}#{h['sample']}: {h['place'] or ''}")
                         for h in view["hypotheses"]]
        layers["neighbors"] = [_point(n.lat, n.lon, f"gallery neighbour {n.id}, similarity {n.similarity:.3f}")
                               for n in d.neighbors]
        layers["gps"] = [_point(g.lat, g.lon, f"GPS candidate, similarity {g.similarity:.3f}")
                         for g in d.gps_candidates]
        view["steps"] = [{"step": e.step, "duration_s": e.duration_s, "error": e.error} for e in d.trace.events]
    return view


def session_view(state: SessionState) -> dict[str, Any]:
    return {
        "session_id": state.session_id,
        "image_name": PurePath(state.image_path).name,
        "history": [{"user": t.user, "reply": t.reply, "kind": t.kind} for t in state.history],
        **answer_view(state.prediction, state.trace, state.constraints),
    }


def summary_view(summary: SessionSummary) -> dict[str, Any]:
    return {
        "session_id": summary.session_id,
        "image_name": PurePath(summary.image_path).name,
        "place": summary.place,
        "updated_at": summary.updated_at,
        "turns": summary.turns,
    }


def batch_view(records: list[Any]) -> list[dict[str, Any]]:
    """Rows of a results JSONL (``geosleuth.agent.batch.ResultRecord``) for the batch browser."""
    rows = []
    for record in records:
        prediction: Prediction | None = record.prediction
        row: dict[str, Any] = {"id": record.id, "path": record.path, "line": record.line}
        if prediction is None:
            row.update(status="error", error=record.error, lat=None, lon=None, confidence=None, place=None)
        else:
            row.update(
                status=status_of(prediction), error=prediction.failure_reason, lat=prediction.lat, lon=prediction.lon,
                confidence=prediction.confidence,
                place=prediction.place.hierarchy() if prediction.place else None,
            )
        rows.append(row)
    return rows
