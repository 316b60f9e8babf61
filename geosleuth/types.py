"""Plain, typed, JSON-serialisable data objects passed between stages.

Data flows one way: perceive -> retrieve -> reason -> verify -> decide. Each stage takes and returns
these objects only, never another stage's internals. Every top-level record carries
``schema_version`` so files written today stay readable (and detectably different) tomorrow.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"coordinate ({lat}, {lon}) is not finite")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude {lat} is outside [-90, 90]")
    if not -360.0 <= lon <= 360.0:
        raise ValueError(f"longitude {lon} is outside [-360, 360]")
    if not -180.0 <= lon < 180.0:  # wrap only when needed: the formula perturbs in-range floats
        lon = ((lon + 180.0) % 360.0) - 180.0
    return float(lat), float(lon)


class Coordinate(_Record):
    lat: float
    lon: float

    @model_validator(mode="after")
    def _validate(self) -> Coordinate:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class Place(_Record):
    """A reverse-geocoded place hierarchy. Any level may be unknown (None)."""

    continent: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2
    country: str | None = None
    admin1: str | None = None  # region / state
    admin2: str | None = None  # county / district
    city: str | None = None  # nearest GeoNames place with >= 1000 people
    city_distance_km: float | None = None  # how far that place is (large: sea or wilderness)

    def hierarchy(self) -> str:
        """E.g. 'Europe > Portugal > Lisbon > Sintra' (unknown levels are skipped)."""
        parts = [self.continent, self.country, self.admin1, self.city]
        out: list[str] = []
        for part in parts:
            if part and (not out or out[-1] != part):
                out.append(part)
        return " > ".join(out) if out else "unknown place"


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
    OCR = "ocr"  # a place named in text read in the photo


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


# --- Text in the photo (perceive's OCR), as evidence -------------------------------------------------------------


class TextRegion(_Record):
    """One line of text read in the photo. ``box`` is (x0, y0, x1, y1) in the perceived image's pixels."""

    text: str
    confidence: float = Field(ge=0.0, le=1.0)  # the recogniser's own score
    box: tuple[float, float, float, float]


class LanguageGuess(_Record):
    language: str  # ISO 639-1 code, e.g. "pt"
    probability: float = Field(ge=0.0, le=1.0)


class PlaceMatch(_Record):
    """A gazetteer place whose name was read in the photo."""

    text: str  # the words read, as read
    name: str  # the place's GeoNames name
    matched_name: str  # which of its names matched (e.g. "Lisboa" for Lisbon)
    geonameid: int
    country_code: str
    lat: float
    lon: float
    population: int
    similarity: float = Field(ge=0.0, le=1.0)  # 1.0 = exact (after case/accent folding); less = fuzzy match
    weight: float = Field(ge=0.0, le=1.0)  # share among the places that carry the same name (by population)

    @model_validator(mode="after")
    def _validate(self) -> PlaceMatch:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class TextEvidence(_Record):
    """What the text in the photo says about where it is: lines read, scripts, languages, a soft country prior
    (ISO alpha-2 -> probability; empty when the text says nothing) and gazetteer places named in it."""

    regions: list[TextRegion] = Field(default_factory=list)
    scripts: list[str] = Field(default_factory=list)  # Unicode script names, most letters first
    languages: list[LanguageGuess] = Field(default_factory=list)
    country_prior: dict[str, float] = Field(default_factory=dict)
    places: list[PlaceMatch] = Field(default_factory=list)
    reader: str | None = None  # which OCR model read it
