"""The HTML view of a trace: one self-contained page (no JS, no external CSS, fonts or tiles) with
the decision, a map, the chain of reasoning, candidates with their scores, retrieval and prompts.
Every piece of text from the trace is escaped."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geosleuth.agent.trace.digest import (
    cluster_rows,
    digest,
    fmt_coord,
    hypothesis_place,
    osm_link,
    score_names,
    tool_call_rows,
)
from geosleuth.agent.trace.svg_map import MAP_STYLE, map_points, map_svg, zoom_bounds
from geosleuth.geo import geodesic_km
from geosleuth.types import Trace

if TYPE_CHECKING:
    from geosleuth.geo.boundaries import CountryBoundaries

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


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f'<th{" class=n" if n else ""}>{html.escape(h)}</th>' for h, n in zip(headers, numeric, strict=True))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if n else ""}>{cell}</td>' for cell, n in zip(row, numeric, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def trace_html(trace: Trace, *, land: CountryBoundaries | None = None, title: str | None = None) -> str:
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

    if d.problems:
        items = "".join(f"<li>{esc(problem)}</li>" for problem in d.problems)
        parts.append(f'<h2 class="bad">Parts of this trace could not be read and are not shown '
                     f"({len(d.problems)})</h2><ul>{items}</ul>")
    parts.append("<h2>Decision</h2>")
    if p is None:
        parts.append('<p class="bad">The trace has no prediction (the run stopped before deciding).</p>')
    elif p.ok:
        assert p.lat is not None and p.lon is not None
        conf = f", confidence {p.confidence:.2f}" if p.confidence is not None else ""
        parts.append(
            f'<p class="ok"><b>{esc(fmt_coord(p.lat, p.lon))}</b> — '
            f"{esc(p.place.hierarchy() if p.place else 'unknown place')}{esc(conf)} · "
            f'<a href="{esc(osm_link(p.lat, p.lon))}">OpenStreetMap</a></p>'
        )
        if p.degraded:
            parts.append(f'<p class="bad">Status: degraded, answered without {esc(", ".join(p.missing_stages))}</p>')
    else:
        parts.append(f'<p class="bad">No coordinate: {esc(p.failure_reason or "")}</p>')
    if p is not None and p.levels is not None:
        parts.append(f"<p>{esc(p.levels.summary())} (calibration {esc(p.levels.calibration)})</p>")
    if p is not None and p.text is not None:
        parts.append(f"<p><b>Text in the photo</b>: {esc(p.text.summary(max_lines=12))}</p>")
    if p is not None and p.evidence is not None and p.evidence.clusters:
        headers, rows = cluster_rows(p.evidence)
        parts.append(f"<h3>Clusters, heaviest first: evidence per source ({len(p.evidence.clusters)})</h3>")
        parts.append(_table(headers, ([esc(cell) for cell in row] for row in rows)))
    if d.exif_gps is not None:
        distance = ""
        if p is not None and p.lat is not None and p.lon is not None:
            km = float(geodesic_km(p.lat, p.lon, d.exif_gps.lat, d.exif_gps.lon))
            distance = f" — {km:,.1f} km from the prediction"
        parts.append(f"<p>EXIF GPS in the file: {esc(fmt_coord(d.exif_gps.lat, d.exif_gps.lon))}{esc(distance)}</p>")
    if p is not None and p.failures:
        items = "".join(f"<li><b>{esc(f.step)}</b>: {esc(f.error)}</li>" for f in p.failures)
        parts.append(f'<p class="bad">Steps that failed:</p><ul>{items}</ul>')

    parts.append("<h2>Map</h2>")
    legend = "".join(
        f'<span><i style="background:{MAP_STYLE[kind][0]}"></i>{esc(text)}</span>' for kind, text in _LEGEND
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
    calls = tool_call_rows(trace)
    if calls:
        parts.append(f"<h3>Tool calls ({len(calls)})</h3>")
        parts.append(_table(("tool", "arguments", "result", "s"),
                            ((esc(a), esc(b), esc(c), d) for a, b, c, d in calls), (False, False, False, True)))
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
                    esc(f"{h.variant}#{h.sample_index}"), esc(hypothesis_place(h)), esc(fmt_coord(h.lat, h.lon)),
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
    names = score_names(d.candidates)
    if d.candidates:
        parts.append(_table(
            ("#", "coordinate", "place", "source", *names, "score", "confidence"),
            (
                (
                    str(i), esc(fmt_coord(c.lat, c.lon)), esc(c.place.hierarchy() if c.place else ""),
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
            ((esc(n.id), esc(fmt_coord(n.lat, n.lon)), esc(n.place.hierarchy() if n.place else ""),
              f"{n.similarity:.3f}") for n in d.neighbors),
            (False, False, False, True),
        ))
    if d.gps_candidates:
        parts.append(_table(
            ("GPS-gallery candidate", "similarity", "probability"),
            ((esc(fmt_coord(g.lat, g.lon)), f"{g.similarity:.3f}",
              f"{g.probability:.3f}" if g.probability is not None else "–") for g in d.gps_candidates),
            (False, True, True),
        ))

    if trace.prompts:
        parts.append(f"<h2>Prompts ({len(trace.prompts)})</h2>")
        for prompt in trace.prompts:
            summary = f"{prompt.template_id} ({prompt.template_hash[:12]}) · {prompt.variant} · {prompt.model}"
            parts.append(f"<details><summary>{esc(summary)}</summary><pre>{esc(prompt.rendered or '')}</pre>"
                         "</details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def html_file_name(key: str) -> str:
    """A safe file name for one trace's page."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "trace"
    return f"{stem[:120]}.html"
