"""The one basemap: GeoJSON for the web app, SVG for the trace page, matplotlib for the eval report."""

from __future__ import annotations

import json
import re

import pytest

from geosleuth.geo import ReverseGeocoder
from geosleuth.geo.basemap import WORLD, basemap_geojson, bbox_around, draw_basemap, project, svg_basemap


@pytest.fixture(scope="module")
def boundaries():
    return ReverseGeocoder().boundaries


def test_geojson_has_the_geocoders_countries(boundaries):
    import shapely
    import shapely.geometry

    collection = basemap_geojson(0.05, boundaries=boundaries)
    assert collection["type"] == "FeatureCollection"
    codes = {f["properties"]["iso_a2"] for f in collection["features"]}
    assert {"FR", "US", "AQ", "XK", None} <= codes  # None: Bir Tawil and the other code-less areas
    features = {f["properties"]["name"]: f for f in collection["features"]}
    assert len(features) == len(boundaries.countries)  # simplifying erases no state, however small
    assert {"Vatican", "Tuvalu", "Nauru", "Monaco"} <= set(features)
    assert features["France"]["properties"]["iso_a2"] == "FR"
    france = shapely.geometry.shape(features["France"]["geometry"])
    assert france.contains(shapely.Point(2.35, 48.85)) and not france.contains(shapely.Point(-3.0, 46.0))
    text = json.dumps(collection)  # plain JSON, rounded coordinates: small enough to serve
    assert len(text) < 3_000_000
    assert not re.search(r"\d\.\d{4,}", text)
    with pytest.raises(ValueError, match="tolerance_deg"):
        basemap_geojson(-1, boundaries=boundaries)


def test_svg_paths_cover_land_in_the_box_and_nothing_at_open_sea(boundaries):
    svg = svg_basemap((-6.0, 41.0, 10.0, 52.0), 400, 300, boundaries=boundaries)
    assert svg.startswith('<g class="basemap">') and svg.endswith("</g>")
    assert "<title>France</title>" in svg and "<title>Japan</title>" not in svg
    xy = [float(v) for v in re.findall(r"-?\d+\.\d", svg)]
    assert min(xy) >= -0.1 and max(xy) <= 400.1  # clipped to the box
    ocean = svg_basemap((-140.0, -40.0, -130.0, -30.0), 200, 200, boundaries=boundaries)  # South Pacific
    assert "<path" not in ocean
    with pytest.raises(ValueError, match="bbox"):
        svg_basemap((10.0, 0.0, 5.0, 1.0), 100, 100, boundaries=boundaries)


def test_svg_across_the_antimeridian_draws_both_sides(boundaries):
    bbox = (178.0, -18.5, 182.0, -15.5)  # Fiji, both sides of 180 degrees
    svg = svg_basemap(bbox, 400, 300, boundaries=boundaries)
    xs = [float(x) for x in re.findall(r"(-?\d+\.\d),-?\d+\.\d", svg)]
    seam = 200.0  # 180 degrees is mid-box
    assert any(x < seam - 5 for x in xs) and any(x > seam + 5 for x in xs)
    x, _ = project(-16.9, -179.97, bbox, 400, 300)
    assert seam < x < 400


def test_bbox_around_zooms_to_the_points():
    x0, y0, x1, y1 = bbox_around([(48.85, 2.35), (38.72, -9.14)], pad_deg=1.0)
    assert (x0, x1) == pytest.approx((-10.14, 3.35)) and (y0, y1) == pytest.approx((37.72, 49.85))
    x0, y0, x1, y1 = bbox_around([(10.0, 10.0)], pad_deg=0.1, min_span_deg=2.0)
    assert (x1 - x0, y1 - y0) == pytest.approx((2.0, 2.0))
    x0, y0, x1, y1 = bbox_around([(48.85, 2.35), (38.72, -9.14)], aspect=2.0)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(2.0)
    x0, _, x1, _ = bbox_around([(-17.0, 179.0), (-16.0, -179.0)])  # across the date line: narrow
    assert x1 > 180.0 and x1 - x0 < 10.0
    _, y0, _, y1 = bbox_around([(89.9, 0.0)])
    assert y1 == 90.0 and y1 - y0 >= 2.0
    assert bbox_around([]) == WORLD
    with pytest.raises(ValueError, match="lat"):
        bbox_around([(95.0, 0.0)])


def test_draw_basemap_on_matplotlib_axes(boundaries):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_basemap(ax, (-10.0, 36.0, 5.0, 44.0), boundaries=boundaries)
    assert ax.get_xlim() == (-10.0, 5.0) and ax.get_ylim() == (36.0, 44.0)
    (land,) = ax.collections
    assert len(land.get_paths()) >= 2  # Iberia's countries, the Balearics
    fig.canvas.draw()
