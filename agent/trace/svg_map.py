"""The trace page's map: an inline SVG on an equirectangular frame with a graticule, over the shared
basemap (:mod:`geosleuth.geo.basemap`: Natural Earth's land and borders, the reverse geocoder's own
boundary data). Nothing is loaded from anywhere (no tiles, no JS).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geosleuth.agent.trace.digest import TraceDigest, fmt_coord, hypothesis_place

if TYPE_CHECKING:
    from geosleuth.geo.boundaries import CountryBoundaries


@dataclass(frozen=True)
class MapPoint:
    lat: float
    lon: float
    kind: str  # prediction | candidate | hypothesis | neighbor | gps | exif
    label: str
    rank: int | None = None
    weight: float = 0.0  # 0..1, drawn as size


MAP_STYLE = {
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
    points += [MapPoint(h.lat, h.lon, "hypothesis", f"{h.variant}#{h.sample_index}: {hypothesis_place(h)}",
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


def load_basemap() -> CountryBoundaries:
    """The country polygons every map draws (about a second to load): load once, pass to :func:`trace_html`."""
    from geosleuth.geo.boundaries import CountryBoundaries

    return CountryBoundaries.load()


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
    land: CountryBoundaries | None = None,
    title: str = "world",
) -> str:
    """An equirectangular map of ``points`` within ``bounds`` (south, north, west, east) as inline SVG,
    over land and borders from ``land`` (none drawn when None)."""
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
    if land is not None:
        from geosleuth.geo.basemap import svg_basemap

        out.append(svg_basemap((west, south, east, north), width, height, boundaries=land))
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
        color, opacity = MAP_STYLE[kind]
        for pt in points:
            if pt.kind != kind or not (south <= pt.lat <= north and west <= pt.lon <= east):
                continue
            cx, cy = x(pt.lon), y(pt.lat)
            tip = f"<title>{esc(pt.label)} — {esc(fmt_coord(pt.lat, pt.lon))}</title>"
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
