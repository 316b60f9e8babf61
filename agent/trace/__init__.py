"""Views of a reasoning trace: reading trace files, a terminal tree and a self-contained HTML page.

Both views show the chain clues -> hypotheses -> candidates (with their component scores) ->
decision. Modules: :mod:`.io` (reading and selecting traces), :mod:`.digest` (a trace's stage
outputs gathered and validated for the views; unreadable parts are reported, not dropped),
:mod:`.terminal` (rich tree), :mod:`.html_page` (the page) and :mod:`.svg_map` (its map).

The trace is for looking at: code that needs a run's reasoning (chat follow-ups, the web app)
reads :class:`geosleuth.types.RunSummary` instead of parsing trace JSON. This package may import
``geosleuth.types``, ``geosleuth.geo`` and ``geosleuth.errors``, never a stage module.
"""

from geosleuth.agent.trace.digest import TraceDigest, digest, fmt_coord, osm_link
from geosleuth.agent.trace.html_page import html_file_name, trace_html
from geosleuth.agent.trace.io import LoadedTrace, load_traces, select_trace, trace_file_name
from geosleuth.agent.trace.svg_map import MapPoint, load_basemap, map_points, map_svg, zoom_bounds
from geosleuth.agent.trace.terminal import MAX_LISTED_GPS, MAX_LISTED_NEIGHBORS, trace_tree

__all__ = [
    "MAX_LISTED_GPS",
    "MAX_LISTED_NEIGHBORS",
    "LoadedTrace",
    "MapPoint",
    "TraceDigest",
    "digest",
    "fmt_coord",
    "html_file_name",
    "load_basemap",
    "load_traces",
    "map_points",
    "map_svg",
    "osm_link",
    "select_trace",
    "trace_file_name",
    "trace_html",
    "trace_tree",
    "zoom_bounds",
]
