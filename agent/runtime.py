"""The once-per-process resources the graph runs with: encoders, galleries, the VLM backend.

``Resources.load(config)`` loads everything the configuration names, once; the result is handed to
the graph as its LangGraph context (``graph.ainvoke(state, context=resources)``) and shared by every
image and every concurrent call. Nothing here is global: two ``Resources`` are two sets of models.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from geosleuth.agent.confidence import Calibration, load_calibration
from geosleuth.config import Config, expand_path
from geosleuth.geo import ReverseGeocoder

if TYPE_CHECKING:
    from geosleuth.agent.tools.registry import ToolRegistry
    from geosleuth.agent.tools.text_evidence import TextTools
    from geosleuth.index.encoders import ImageEncoder, LocationEncoder
    from geosleuth.index.gps_gallery import GPSGallery
    from geosleuth.index.store import ImageGallery
    from geosleuth.vlm.backends import VLMBackend

log = logging.getLogger(__name__)

# index.gps_gallery values that switch the GPS gallery off.
NO_GPS_GALLERY = ("", "none")


@dataclass
class Resources:
    """Everything a locate run needs besides its inputs. ``None`` means "not configured".

    ``store`` is an image gallery (:class:`geosleuth.index.store.GalleryStore` when loaded from the
    configuration); ``backend`` None means retrieval only (``vlm.backend = "none"``).
    """

    config: Config
    image_encoder: ImageEncoder
    geocoder: ReverseGeocoder = field(default_factory=ReverseGeocoder)
    location_encoder: LocationEncoder | None = None
    gps_gallery: GPSGallery | None = None
    store: ImageGallery | None = None
    backend: VLMBackend | None = None
    calibration: Calibration | None = None  # None: verify.calibration, else the shipped default
    text_tools: TextTools | None = None  # OCR, language identification, gazetteer (text.ocr)
    tool_registry: ToolRegistry | None = None  # the VLM's tools (agent.mode = tools)
    # agent.mode = tools on a server that cannot call tools: why; the run uses the fixed pipeline
    # (set once, by the preflight or the first photo: see geosleuth.agent.toolloop.fallback).
    tools_fallback: str | None = None
    load_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, config: Config) -> Resources:
        """Load every model and index ``config`` names (ModelNotAvailableError / GalleryIndexError /
        ConfigError say which setting to fix)."""
        from geosleuth.index.encoders import create_image_encoder, create_location_encoder

        timings: dict[str, float] = {}

        def timed(name: str, make: Any) -> Any:
            started = time.perf_counter()
            value = make()
            timings[name] = round(time.perf_counter() - started, 3)
            log.info("loaded %s in %.2f s", name, timings[name])
            return value

        image_encoder = timed("image_encoder", lambda: create_image_encoder(config.encoders))
        location_encoder = timed("location_encoder", lambda: create_location_encoder(config.encoders))
        gps_gallery = None
        if config.index.gps_gallery.strip().lower() not in NO_GPS_GALLERY:
            from geosleuth.index.gps_gallery import GPSGallery

            gps_gallery = timed(
                "gps_gallery",
                lambda: GPSGallery.load(config.index.gps_gallery, location_encoder, config.index.cache_dir),
            )
        store = None
        if config.index.gallery is not None:
            from geosleuth.index.store import GalleryStore

            gallery_path = expand_path(config.index.gallery)
            store = timed("gallery", lambda: GalleryStore.open(gallery_path, image_encoder=image_encoder))
        backend = None
        if config.vlm.backend != "none":
            from geosleuth.vlm.registry import create_backend

            backend = timed("vlm", lambda: create_backend(config.vlm))
        text_tools = None
        if config.text.ocr:
            from geosleuth.agent.tools.text_evidence import TextTools

            text_tools = timed("text_tools", lambda: TextTools.from_config(config.text))
        return cls(
            config=config,
            text_tools=text_tools,
            image_encoder=image_encoder,
            location_encoder=location_encoder,
            gps_gallery=gps_gallery,
            store=store,
            backend=backend,
            calibration=timed("calibration", lambda: load_calibration(config.verify.calibration)),
            load_seconds=timings,
        )

    def __post_init__(self) -> None:
        if self.calibration is None:
            self.calibration = load_calibration(self.config.verify.calibration)
        if self.tool_registry is None and self.config.agent.mode == "tools" and self.backend is not None:
            from geosleuth.agent.tools.catalog import default_tools

            self.tool_registry = default_tools(self)  # the tools this run's resources can serve

    def model_ids(self) -> dict[str, str]:
        """Role -> model/index id, as recorded in every trace."""
        ids = {"image_encoder": f"{self.image_encoder.name}:{self.image_encoder.model_id}"}
        if self.location_encoder is not None:
            ids["location_encoder"] = self.location_encoder.name
        if self.gps_gallery is not None:
            ids["gps_gallery"] = f"{self.gps_gallery.source} ({len(self.gps_gallery)} points)"
        if self.store is not None:
            ids["gallery"] = self.store.describe()
        ids["vlm"] = self.backend.model_id if self.backend is not None else "none"
        if self.text_tools is not None:
            ids["ocr"] = self.text_tools.reader.name
        if self.calibration is not None:
            ids["calibration"] = self.calibration.label
        return ids

    async def aclose(self) -> None:
        """Release the VLM backend's connections / memory and the gallery store's files."""
        try:
            if self.backend is not None:
                await self.backend.aclose()
        finally:
            if self.store is not None:
                self.store.close()
