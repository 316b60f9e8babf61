"""Plain, typed, JSON-serialisable data objects passed between stages.

Data flows one way: perceive -> retrieve -> reason -> verify -> decide. Each stage takes and returns
these objects only, never another stage's internals. Every top-level record carries
``schema_version`` so files written today stay readable (and detectably different) tomorrow.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Place is the geocoder's output type; it lives in geosleuth.geo (which imports nothing from here).
from geosleuth.geo.coordinates import validate_coordinate
from geosleuth.geo.place import Place as Place

SCHEMA_VERSION = "1.0"

MetadataValue = str | int | float | bool | None


class _Record(BaseModel):
    # extra="forbid": a misspelt field is a bug, not something to carry silently.
    model_config = ConfigDict(extra="forbid", frozen=False)


def _check_lat_lon(lat: float | None, lon: float | None) -> tuple[float | None, float | None]:
    """Validate a coordinate pair (both or neither present); normalise longitude to [-180, 180)."""
    if lat is None and lon is None:
        return None, None
    if lat is None or lon is None:
        raise ValueError("latitude and longitude must both be given (got only one)")
    return validate_coordinate(lat, lon)


class Coordinate(_Record):
    lat: float
    lon: float

    @model_validator(mode="after")
    def _validate(self) -> Coordinate:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class ExifInfo(_Record):
    gps: Coordinate | None = None
    taken_at: str | None = None  # EXIF DateTimeOriginal as written in the file
    camera: str | None = None


class ImageRef(_Record):
    """Which image a result is about. ``path`` is as the user gave it (not resolved)."""

    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    exif: ExifInfo | None = None


class GalleryNeighbor(_Record):
    id: str
    lat: float
    lon: float
    similarity: float
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    place: Place | None = None

    @model_validator(mode="after")
    def _validate(self) -> GalleryNeighbor:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class GPSCandidate(_Record):
    """A coordinate from the GPS gallery, scored by image-location embedding similarity."""

    lat: float
    lon: float
    similarity: float
    probability: float | None = None

    @model_validator(mode="after")
    def _validate(self) -> GPSCandidate:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class RetrievalResult(_Record):
    neighbors: list[GalleryNeighbor] = Field(default_factory=list)
    dissimilar: list[GalleryNeighbor] = Field(default_factory=list)
    gps_candidates: list[GPSCandidate] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)  # e.g. ["gallery", "gps-gallery"]


class Clue(_Record):
    observation: str
    implication: str


class Hypothesis(_Record):
    """One parsed VLM answer. Coordinates are required: an answer without them is a failure."""

    clues: list[Clue] = Field(default_factory=list)
    continent: str | None = None
    country: str | None = None
    country_code: str | None = None
    region: str | None = None
    city: str | None = None
    lat: float
    lon: float
    confidence: float = Field(ge=0.0, le=1.0)
    raw_text: str
    template_id: str
    template_hash: str
    model: str
    variant: str  # which prompt variant (e.g. "neighbors-10")
    sample_index: int = 0

    @model_validator(mode="after")
    def _validate(self) -> Hypothesis:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class ReasoningFailure(_Record):
    """A VLM reply that could not be used; the raw text is kept for inspection."""

    variant: str
    template_id: str
    template_hash: str
    model: str
    error: str
    raw_text: str | None = None
    sample_index: int = 0


class PromptRecord(_Record):
    """Which template (and version hash) produced a prompt, for which variant and model."""

    template_id: str
    template_hash: str
    variant: str
    model: str
    rendered: str | None = None


class ReasoningResult(_Record):
    """Everything the reason stage produced: usable hypotheses, failures (raw text kept), prompts."""

    hypotheses: list[Hypothesis] = Field(default_factory=list)
    failures: list[ReasoningFailure] = Field(default_factory=list)
    prompts: list[PromptRecord] = Field(default_factory=list)
    raw_replies: list[str] = Field(default_factory=list)


class CandidateSource(str, Enum):
    RETRIEVAL = "retrieval"
    GPS_GALLERY = "gps-gallery"
    VLM = "vlm"
    USER = "user"


class Candidate(_Record):
    lat: float
    lon: float
    source: CandidateSource
    source_ref: str | None = None  # neighbour id, hypothesis variant/sample, ...
    scores: dict[str, float] = Field(default_factory=dict)  # component name -> score in [0, 1]
    score: float = 0.0  # weighted combination
    confidence: float = 0.0  # normalised over the ranked pool
    place: Place | None = None

    @model_validator(mode="after")
    def _validate(self) -> Candidate:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class StepFailure(_Record):
    step: str
    error: str


class Prediction(_Record):
    """The answer for one image. ``lat``/``lon`` are None when nothing could be predicted, and then
    ``failure_reason`` says why; a failed step never turns into a made-up coordinate."""

    schema_version: str = SCHEMA_VERSION
    image: ImageRef
    lat: float | None = None
    lon: float | None = None
    place: Place | None = None
    confidence: float | None = None
    alternatives: list[Candidate] = Field(default_factory=list)
    clues: list[Clue] = Field(default_factory=list)
    sources_used: list[str] = Field(default_factory=list)
    failures: list[StepFailure] = Field(default_factory=list)
    failure_reason: str | None = None
    trace_id: str | None = None

    @model_validator(mode="after")
    def _validate(self) -> Prediction:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)
        if self.lat is None and not self.failure_reason:
            raise ValueError("a prediction without a coordinate must give a failure_reason")
        return self

    @property
    def ok(self) -> bool:
        return self.lat is not None


class TraceEvent(_Record):
    step: str
    started_at: float  # unix time, seconds
    duration_s: float
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Trace(_Record):
    schema_version: str = SCHEMA_VERSION
    trace_id: str
    image: ImageRef
    config_hash: str
    models: dict[str, str] = Field(default_factory=dict)  # role -> model id
    events: list[TraceEvent] = Field(default_factory=list)
    prompts: list[PromptRecord] = Field(default_factory=list)
    prediction: Prediction | None = None

    @field_validator("events")
    @classmethod
    def _ordered(cls, events: list[TraceEvent]) -> list[TraceEvent]:
        starts = [e.started_at for e in events]
        if starts != sorted(starts):
            raise ValueError("trace events must be in the order they started")
        return events
