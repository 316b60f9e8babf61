"""Land and borders for every map, drawn from the geocoder's own country polygons.

One source for the trace page (SVG), the evaluation report (matplotlib) and the web app (GeoJSON),
so a map never shows a border the reverse geocoder does not use. Projection: equirectangular
(x = longitude, y = latitude), zoomed to the points shown with :func:`bbox_around`.

A bbox is ``(min_lon, min_lat, max_lon, max_lat)`` in degrees. To show points on both sides of the
antimeridian, ``max_lon`` may exceed 180 (e.g. ``(170, -30, 190, -10)``): land east of the date line
is drawn shifted by 360 degrees, and :func:`project` does the same for points.

Every function takes ``boundaries``: pass ``geocoder.boundaries`` to reuse the polygons a
:class:`~geosleuth.geo.ReverseGeocoder` already loaded; None loads them (about half a second).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .boundaries import CountryBoundaries

if TYPE_CHECKING:
    from matplotlib.axes import Axes

BBox = tuple[float, float, float, float]
WORLD: BBox = (-180.0, -90.0, 180.0, 90.0)
LAND_FILL = "#e8e4d8"
BORDER_STROKE = "#8c8778"
SEA_FILL = "#d4e6f1"


def _boundaries(boundaries: CountryBoundaries | None) -> CountryBoundaries:
    return boundaries if boundaries is not None else CountryBoundaries.load()


def _check_bbox(bbox: Sequence[float]) -> BBox:
    if len(bbox) != 4:
        raise ValueError(f"bbox must be (min_lon, min_lat, max_lon, max_lat), got {bbox!r}")
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if not (np.isfinite([x0, y0, x1, y1]).all() and x0 < x1 and y0 < y1):
        raise ValueError(f"bbox {bbox!r} is empty or not finite: need min_lon < max_lon and min_lat < max_lat")
    if x1 - x0 > 360.0 or x0 < -540.0 or x1 > 540.0 or y0 < -90.0 or y1 > 90.0:
        raise ValueError(f"bbox {bbox!r} is outside the world (latitudes in [-90, 90], at most 360 degrees wide)")
    return x0, y0, x1, y1


def _simplify(geometries: Any, tolerance_deg: float) -> Any:
    """Douglas-Peucker without topology preservation (8x faster), except for areas it would erase:
    an island state must not vanish from the map."""
    import shapely

    out = shapely.simplify(geometries, tolerance_deg, preserve_topology=False)
    lost = shapely.is_empty(out) & ~shapely.is_empty(geometries)
    if lost.any():
        out[lost] = shapely.simplify(geometries[lost], tolerance_deg, preserve_topology=True)
    return out


def _clipped(boundaries: CountryBoundaries, bbox: BBox, tolerance_deg: float) -> list[tuple[int, Any]]:
    """(country index, simplified geometry clipped to bbox), shifted copies across the antimeridian."""
    import shapely

    x0, y0, x1, y1 = bbox
    out: list[tuple[int, Any]] = []
    for shift in (-360.0, 0.0, 360.0):
        if x1 <= -180.0 + shift or x0 >= 180.0 + shift:
            continue
        clipped = shapely.clip_by_rect(boundaries.geometries, x0 - shift, y0, x1 - shift, y1)
        if tolerance_deg > 0:
            clipped = _simplify(clipped, tolerance_deg)
        for i in np.flatnonzero(~shapely.is_empty(clipped)):
            geometry = clipped[i]
            out.append((int(i), shapely.transform(geometry, lambda xy, s=shift: xy + [s, 0.0]) if shift else geometry))
    return out


def _polygons(geometry: Any) -> Iterable[Any]:
    """The polygons of a (Multi)Polygon or GeometryCollection (clipping can return any of them)."""
    kind = geometry.geom_type
    if kind == "Polygon":
        yield geometry
    elif kind in ("MultiPolygon", "GeometryCollection"):
        for part in geometry.geoms:
            yield from _polygons(part)


def basemap_geojson(tolerance_deg: float = 0.05, *, boundaries: CountryBoundaries | None = None) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of simplified country polygons (properties ``iso_a2``, ``name``).

    ``tolerance_deg``: Douglas-Peucker tolerance (0.05 degrees: about 5 km, fine for a world or
    country view). Areas without an ISO code have ``iso_a2`` null. Coordinates are rounded to
    0.001 degrees.
    """
    import shapely

    if not tolerance_deg >= 0:
        raise ValueError(f"tolerance_deg must be >= 0, got {tolerance_deg}")
    b = _boundaries(boundaries)
    simplified = _simplify(b.geometries, tolerance_deg) if tolerance_deg > 0 else b.geometries
    simplified = shapely.transform(simplified, lambda xy: np.round(xy, 3))
    features = []
    for country, geometry in zip(b.countries, simplified, strict=True):
        if geometry is None or shapely.is_empty(geometry):
            continue  # an islet smaller than the tolerance
        features.append({
            "type": "Feature",
            "properties": {"iso_a2": country.code, "name": country.name},
            "geometry": shapely.geometry.mapping(geometry),
        })
    return {"type": "FeatureCollection", "features": features}


def project(lat: float, lon: float, bbox: Sequence[float], width: float, height: float) -> tuple[float, float]:
    """Pixel (x, y) of a point on an equirectangular map of ``bbox`` (y grows downwards)."""
    x0, y0, x1, y1 = _check_bbox(bbox)
    lon = float(lon)
    if lon < x0:
        lon += 360.0  # the map crosses the antimeridian eastwards
    elif lon > x1:
        lon -= 360.0
    return (lon - x0) / (x1 - x0) * width, (y1 - float(lat)) / (y1 - y0) * height


def svg_basemap(bbox: Sequence[float], width: int, height: int, *,
                boundaries: CountryBoundaries | None = None) -> str:
    """SVG for the land (filled) and borders in ``bbox``, as a ``<g class="basemap">`` of ``<path>``s.

    Put it first inside an ``<svg width=.. height=..>`` of the same size (draw a sea-coloured
    ``<rect>`` under it if you want one), then place markers with :func:`project`. Geometry is
    simplified to about half a pixel.
    """
    box = _check_bbox(bbox)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    x0, y0, x1, y1 = box
    sx, sy = width / (x1 - x0), height / (y1 - y0)
    pixel_deg = 0.5 / max(sx, sy)
    b = _boundaries(boundaries)
    paths = []
    for i, geometry in _clipped(b, box, pixel_deg):
        rings = []
        for polygon in _polygons(geometry):
            for ring in (polygon.exterior, *polygon.interiors):
                xy = np.asarray(ring.coords)
                if len(xy) < 3:
                    continue
                px = (xy[:, 0] - x0) * sx
                py = (y1 - xy[:, 1]) * sy
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py, strict=True))
                rings.append(f"M{pts}Z")
        if rings:
            country = b.countries[i]
            title = (country.name or "").replace("&", "&amp;").replace("<", "&lt;")
            paths.append(
                f'<path class="land" d="{"".join(rings)}" fill="{LAND_FILL}" stroke="{BORDER_STROKE}" '
                f'stroke-width="0.6" fill-rule="evenodd"><title>{title}</title></path>'
            )
    return f'<g class="basemap">{"".join(paths)}</g>'


def bbox_around(points: Iterable[tuple[float, float]], pad_deg: float = 1.0, *, min_span_deg: float = 2.0,
                aspect: float | None = None) -> BBox:
    """A bbox that shows every (lat, lon) point with ``pad_deg`` of margin.

    At least ``min_span_deg`` wide and tall (a single point gets a small area around it, not a
    zero-size map). Points on both sides of the antimeridian give a bbox that crosses it (max_lon
    above 180) when that is narrower. ``aspect`` (width / height in pixels): widen the shorter side
    so an equirectangular map of that shape is not stretched. No points: the whole world.
    """
    pts = np.asarray([(float(a), float(o)) for a, o in points], dtype=np.float64).reshape(-1, 2)
    if not len(pts):
        return WORLD
    if not (np.isfinite(pts).all() and (np.abs(pts[:, 0]) <= 90).all()):
        raise ValueError("bbox_around: points must be finite (lat, lon) pairs with |lat| <= 90")
    lat = pts[:, 0]
    lon = ((pts[:, 1] + 180.0) % 360.0) - 180.0
    # The narrowest longitude interval holding all points: the complement of the widest empty gap.
    order = np.sort(lon)
    gaps = np.diff(np.r_[order, order[0] + 360.0])
    widest = int(np.argmax(gaps))
    x0 = float(order[(widest + 1) % len(order)])
    x1 = float(order[widest])
    if x1 < x0:
        x1 += 360.0
    y0, y1 = float(lat.min()), float(lat.max())
    x0, x1 = _grow(x0 - pad_deg, x1 + pad_deg, min_span_deg)
    y0, y1 = _grow(y0 - pad_deg, y1 + pad_deg, min_span_deg)
    if aspect is not None and aspect > 0:
        w, h = x1 - x0, y1 - y0
        if w / h < aspect:
            x0, x1 = _grow(x0, x1, h * aspect)
        else:
            y0, y1 = _grow(y0, y1, w / aspect)
    if x1 - x0 >= 360.0:
        x0, x1 = -180.0, 180.0
    elif x0 >= 180.0 or x1 <= -180.0:  # wholly shifted: bring back into range
        shift = 360.0 if x1 <= -180.0 else -360.0
        x0, x1 = x0 + shift, x1 + shift
    if y1 - y0 >= 180.0:
        y0, y1 = -90.0, 90.0
    elif y0 < -90.0:
        y0, y1 = -90.0, y1 - y0 - 90.0
    elif y1 > 90.0:
        y0, y1 = 90.0 - (y1 - y0), 90.0
    return x0, y0, x1, y1


def _grow(lo: float, hi: float, span: float) -> tuple[float, float]:
    if hi - lo >= span:
        return lo, hi
    mid = (lo + hi) / 2.0
    return mid - span / 2.0, mid + span / 2.0


def draw_basemap(ax: Axes, bbox: Sequence[float], *, boundaries: CountryBoundaries | None = None) -> None:
    """Draw land (filled), coastlines and borders in ``bbox`` on a matplotlib axes; set its limits.

    Longitude on x, latitude on y (equirectangular); points drawn afterwards in the same degrees
    land in the right place (add 360 to longitudes east of the date line on a map that crosses it).
    """
    from matplotlib.collections import PathCollection
    from matplotlib.path import Path as MplPath
    from matplotlib.ticker import FuncFormatter

    box = _check_bbox(bbox)
    x0, y0, x1, y1 = box
    b = _boundaries(boundaries)
    paths = []
    for _, geometry in _clipped(b, box, max(x1 - x0, y1 - y0) / 2000.0):
        for polygon in _polygons(geometry):
            rings = [np.asarray(r.coords) for r in (polygon.exterior, *polygon.interiors) if len(r.coords) >= 3]
            if rings:
                paths.append(MplPath.make_compound_path(*(MplPath(r, closed=True) for r in rings)))
    ax.set_facecolor(SEA_FILL)
    ax.add_collection(PathCollection(paths, facecolor=LAND_FILL, edgecolor=BORDER_STROKE, linewidth=0.5, zorder=0))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    if x0 < -180.0 or x1 > 180.0:  # label 182 as -178 on a map across the antimeridian
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{((v + 180.0) % 360.0) - 180.0:g}"))
