"""What a trace says, pulled together for the views: stage outputs found in the trace's events by key
(``hypotheses``, ``failures``, ``neighbors``, ``gps_candidates``, ``ranked``/``candidates``, or nested
``reasoning``/``retrieval`` objects) and validated as geosleuth types.

For viewing only: code that needs a run's reasoning reads :class:`geosleuth.types.RunSummary`. An
event output that does not validate is not dropped quietly: it becomes a problem (where, and the
validation error) that both views show.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from geosleuth.types import (
    Candidate,
    Clue,
    Coordinate,
    FusionEvidence,
    GalleryNeighbor,
    GPSCandidate,
    Hypothesis,
    Prediction,
    ReasoningFailure,
    ReasoningResult,
    RetrievalResult,
    Trace,
)

M = TypeVar("M", bound=BaseModel)


@dataclass
class TraceDigest:
    trace: Trace
    prediction: Prediction | None
    clues: list[Clue] = field(default_factory=list)
    hypotheses: list[Hypothesis] = field(default_factory=list)
    reasoning_failures: list[ReasoningFailure] = field(default_factory=list)
    neighbors: list[GalleryNeighbor] = field(default_factory=list)
    gps_candidates: list[GPSCandidate] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    exif_gps: Coordinate | None = None
    # Event outputs that did not validate, each as "where: why" (shown by both views, never dropped).
    problems: list[str] = field(default_factory=list)


_WHOLE_OBJECTS = frozenset({"reasoning", "retrieval", "prediction", "trace"})


def _walk(value: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(key, value) for every dict entry, nested dicts included (a few levels deep); objects read
    whole (``reasoning``, ``retrieval``) are not descended into, so nothing is counted twice."""
    if depth > 3 or not isinstance(value, dict):
        return
    for key, item in value.items():
        yield key, item
        if isinstance(item, dict) and key not in _WHOLE_OBJECTS:
            yield from _walk(item, depth + 1)


def _problem(where: str, exc: ValidationError) -> str:
    """``where: why`` for an output that did not validate (the first error, with its location)."""
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {loc + ': ' if loc else ''}{first['msg']}{more}"


def _models(items: Any, model: type[M], what: str, problems: list[str]) -> list[M]:
    if not isinstance(items, list):
        if items is not None:
            problems.append(f"{what}: expected a list, got {type(items).__name__}")
        return []
    out: list[M] = []
    for index, item in enumerate(items):
        try:
            out.append(model.model_validate(item) if not isinstance(item, model) else item)
        except ValidationError as exc:
            problems.append(_problem(f"{what}[{index}]", exc))
    return out


def digest(trace: Trace) -> TraceDigest:
    """Collect the stage outputs recorded in ``trace`` into one object."""
    d = TraceDigest(trace=trace, prediction=trace.prediction)
    for event in trace.events:
        for key, value in _walk(event.outputs):
            if key == "reasoning" and isinstance(value, dict):
                try:
                    reasoning = ReasoningResult.model_validate(value)
                except ValidationError as exc:
                    d.problems.append(_problem(f"{event.step}.reasoning", exc))
                    continue
                d.hypotheses += reasoning.hypotheses
                d.reasoning_failures += reasoning.failures
            elif key == "retrieval" and isinstance(value, dict):
                try:
                    retrieval = RetrievalResult.model_validate(value)
                except ValidationError as exc:
                    d.problems.append(_problem(f"{event.step}.retrieval", exc))
                    continue
                d.neighbors += retrieval.neighbors
                d.gps_candidates += retrieval.gps_candidates
            elif key == "hypotheses":
                d.hypotheses += _models(value, Hypothesis, f"{event.step}.hypotheses", d.problems)
            elif key == "failures" and event.step.startswith("reason"):
                d.reasoning_failures += _models(value, ReasoningFailure, f"{event.step}.failures", d.problems)
            elif key == "neighbors":
                d.neighbors += _models(value, GalleryNeighbor, f"{event.step}.neighbors", d.problems)
            elif key == "gps_candidates":
                d.gps_candidates += _models(value, GPSCandidate, f"{event.step}.gps_candidates", d.problems)
            elif key in ("ranked", "candidates") and not d.candidates:
                d.candidates = _models(value, Candidate, f"{event.step}.{key}", d.problems)
    prediction = trace.prediction
    if prediction is not None:
        if not d.candidates:
            d.candidates = list(prediction.alternatives)
        d.clues = list(prediction.clues)
    if not d.clues:
        seen: set[tuple[str, str]] = set()
        for hypothesis in d.hypotheses:
            for clue in hypothesis.clues:
                if (clue.observation, clue.implication) not in seen:
                    seen.add((clue.observation, clue.implication))
                    d.clues.append(clue)
    exif = trace.image.exif or (prediction.image.exif if prediction else None)
    d.exif_gps = exif.gps if exif else None
    return d


TOOL_STEP_PREFIX = "tool:"  # the tool loop's events: ``tool:<name>`` (agent/toolloop/graph.py)
MAX_SHOWN_RESULT_CHARS = 300


def tool_call_rows(trace: Trace) -> list[tuple[str, str, str, str]]:
    """(tool, arguments as JSON, what came back or the error, seconds) per tool call of the trace, in order
    (none for a pipeline run)."""
    import json

    rows = []
    for event in trace.events:
        if not event.step.startswith(TOOL_STEP_PREFIX):
            continue
        arguments = event.inputs.get("arguments")
        shown = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        result = f"error: {event.error}" if event.error else str(event.outputs.get("text", ""))
        if len(result) > MAX_SHOWN_RESULT_CHARS:
            result = result[:MAX_SHOWN_RESULT_CHARS] + " …"
        rows.append((event.step.removeprefix(TOOL_STEP_PREFIX), shown, result, f"{event.duration_s:.2f}"))
    return rows


def osm_link(lat: float, lon: float, zoom: int = 10) -> str:
    """An OpenStreetMap link with a marker at (lat, lon)."""
    return f"https://www.openstreetmap.org/?mlat={lat:.5f}&mlon={lon:.5f}#map={zoom}/{lat:.5f}/{lon:.5f}"


def fmt_coord(lat: float | None, lon: float | None) -> str:
    if lat is None or lon is None:
        return "no coordinate"
    return f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.4f}°{'E' if lon >= 0 else 'W'}"


def score_names(candidates: Sequence[Candidate]) -> list[str]:
    names: list[str] = []
    for candidate in candidates:
        for name in candidate.scores:
            if name not in names:
                names.append(name)
    return names


def hypothesis_place(h: Hypothesis) -> str:
    parts = [p for p in (h.continent, h.country, h.region, h.city) if p]
    return " > ".join(parts) if parts else "no place named"


def cluster_rows(evidence: FusionEvidence, limit: int = 10) -> tuple[list[str], list[list[str]]]:
    """Each cluster's centre, place, model posterior, P(within 25 km) and per-source mass (items)."""
    sources = list(dict.fromkeys(s.source for c in evidence.clusters for s in c.sources))
    headers = ["#", "centre", "place", "posterior", "P <=25 km", *(f"{s}: mass (items)" for s in sources)]
    rows = []
    for rank, c in enumerate(evidence.clusters[:limit], start=1):
        by_source = {s.source: s for s in c.sources}
        rows.append([str(rank), fmt_coord(c.lat, c.lon), c.place.hierarchy() if c.place else "",
                     f"{c.posterior:.3f}", f"{c.levels.within_25km:.2f}" if c.levels else "-",
                     *(f"{by_source[s].mass:.3f} ({by_source[s].items})" if s in by_source else "-" for s in sources)])
    return headers, rows
