"""The tools one run offers the VLM, built from its resources.

A tool whose resource this run has not configured is left out of the registry, so the model is never
offered a call that can only fail: ``read_text`` needs OCR (``text.ocr``), ``search_gallery`` an
image gallery (``index.gallery``), ``geoclip_candidates`` a GPS gallery (``index.gps_gallery``).
The others are always offered. Each tool still raises ToolError when it is called without its
resource (a registry built by hand, a photo without a GeoCLIP embedding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geosleuth.agent.tools.gazetteer import Gazetteer
from geosleuth.agent.tools.geo_tools import LookupPlaceTool, ReverseGeocodeTool, ScoreLocationTool
from geosleuth.agent.tools.index_tools import GeoclipCandidatesTool, SearchGalleryTool
from geosleuth.agent.tools.registry import Tool, ToolRegistry
from geosleuth.agent.tools.submit import SubmitTool
from geosleuth.agent.tools.vision_tools import ReadTextTool, ZoomTool

if TYPE_CHECKING:
    from geosleuth.agent.runtime import Resources


def default_tools(resources: Resources) -> ToolRegistry:
    """Every tool ``resources`` can serve, in the order the model is shown them (``submit`` last)."""
    tools: list[Tool] = [ZoomTool()]
    if resources.text_tools is not None:
        tools.append(ReadTextTool())
    if resources.store is not None:
        tools.append(SearchGalleryTool())
    if resources.gps_gallery is not None:
        tools.append(GeoclipCandidatesTool())
    tools += [ScoreLocationTool(), ReverseGeocodeTool(), LookupPlaceTool(_gazetteer(resources)), SubmitTool()]
    return ToolRegistry(tools)


def _gazetteer(resources: Resources) -> Gazetteer:
    """The run's gazetteer (the text tools' one, so GeoNames loads once); without OCR, a gazetteer of
    its own with the configured population floor (loaded on the first lookup)."""
    if resources.text_tools is not None:
        return resources.text_tools.gazetteer
    return Gazetteer(min_population=resources.config.text.gazetteer_min_population)
