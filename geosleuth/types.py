"""Plain, typed, JSON-serialisable data objects passed between stages.

Data flows one way: perceive -> retrieve -> reason -> verify -> decide. Each stage takes and returns
these objects only, never another stage's internals. Every top-level record carries
``schema_version`` so files written today stay readable (and detectably different) tomorrow.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Place is the geocoder's output type; it lives in geosleuth.geo (which imports nothing from here).
from geosleuth.geo.coordinates import validate_coordinate
from geosleuth.geo.place import Place as Place

# 1.1: Prediction.status and Prediction.missing_stages. 1.0 files stay readable (see Prediction).
SCHEMA_VERSION = "1.1"

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
    shown_coordinates: int = 0  # retrieved coordinates its prompt showed (0 = a zero-shot answer)
    # Set when the coordinate repeats one shown in its own prompt (e.g. "neighbor 2 (38.7223, -9.1393)"):
    # an echo is kept as a candidate location but never counts as independent evidence.
    echo_of: str | None = None

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
    # invalid = not a schema-valid answer (after one repair); cut_off = the token limit ended the
    # reply (vlm.max_new_tokens too small for the answer); request = the backend gave no reply.
    kind: Literal["invalid", "cut_off", "request"] = "invalid"


class Abstention(_Record):
    """A VLM reply that validly said it cannot tell where the photo is (a null coordinate and why).
    Recorded as what it is: never turned into a point, never counted as a failure."""

    variant: str
    template_id: str
    template_hash: str
    model: str
    reason: str
    raw_text: str
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
    abstentions: list[Abstention] = Field(default_factory=list)
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
    # Evidence source -> log10 of that source's density at this location (per km^2), the candidate's
    # own contribution left out (no candidate supports itself). See agent/fusion.py.
    scores: dict[str, float] = Field(default_factory=dict)
    score: float = 0.0  # the fused log10 density at this location (same model for every candidate)
    confidence: float = 0.0  # calibrated P(truth within 25 km of its cluster's centre); set by decide
    place: Place | None = None
    cluster: int | None = None  # index into FusionEvidence.clusters (None: rejected by a constraint)

    @model_validator(mode="after")
    def _validate(self) -> Candidate:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class LevelConfidence(_Record):
    """Calibrated probabilities that an answer is right at each level (each in [0, 1]).

    country / region / city: the answer's reverse-geocoded country (region, city) is the true one,
    by the rules of ``eval/metrics.py``; within_25km / within_200km: the great-circle error is at most
    that distance. ``calibration`` names the calibration that produced them (``id@sha256[:12]``).
    """

    country: float = Field(ge=0.0, le=1.0)
    region: float = Field(ge=0.0, le=1.0)
    city: float = Field(ge=0.0, le=1.0)
    within_25km: float = Field(ge=0.0, le=1.0)
    within_200km: float = Field(ge=0.0, le=1.0)
    calibration: str

    def columns(self) -> dict[str, float]:
        """``p_<level>`` -> probability: the columns exports and summaries show."""
        return {f"p_{level}": getattr(self, level) for level in LEVELS}

    def summary(self) -> str:
        """One line, e.g. 'P country 0.91 · region 0.62 · city 0.30 · ≤25 km 0.28 · ≤200 km 0.55'."""
        return (f"P country {self.country:.2f} · region {self.region:.2f} · city {self.city:.2f} · "
                f"≤25 km {self.within_25km:.2f} · ≤200 km {self.within_200km:.2f}")


LEVELS = ("country", "region", "city", "within_25km", "within_200km")


class SourceEvidence(_Record):
    """What one evidence source says about one cluster's region."""

    source: str  # gallery | geoclip | vlm-zero-shot | vlm-informed
    items: int  # this source's evidence items inside the region
    mass: float = Field(ge=0.0, le=1.0)  # share of the source's evidence mass inside the region
    log_density: float  # log10 of the source's mean density over the region (per km^2)
    weight: float  # the source's weight in the log-linear pool


class ClusterEvidence(_Record):
    """One place the fusion considered: a cluster of candidates, its evidence per source, its mass."""

    lat: float  # refined centre
    lon: float
    area_km2: float  # the region credited to it (a disc of the cluster radius)
    members: list[str] = Field(default_factory=list)  # "<source>:<source_ref>" of its candidates
    sources: list[SourceEvidence] = Field(default_factory=list)
    log_mass: float  # log10 of the fused (unnormalised) probability mass of the region
    posterior: float = Field(ge=0.0, le=1.0)  # model share of the mass (uncalibrated)
    place: Place | None = None
    levels: LevelConfidence | None = None

    @model_validator(mode="after")
    def _validate(self) -> ClusterEvidence:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)  # type: ignore[assignment]
        return self


class FusionEvidence(_Record):
    """Everything the fusion weighed for one image, enough to refit its parameters later
    (``geosleuth eval calibrate`` reads it from an eval run's predictions.jsonl)."""

    cluster_radius_km: float
    allowed_area_km2: float  # the Earth, or the part of it inside the user's constraints
    floors: dict[str, float] = Field(default_factory=dict)  # source -> log10 density of its uniform part
    clusters: list[ClusterEvidence] = Field(default_factory=list)  # heaviest first
    elsewhere_log_mass: float  # log10 mass of the allowed area outside every cluster
    elsewhere_posterior: float = Field(ge=0.0, le=1.0)
    calibration: str  # id@hash of the calibration file used


class StepFailure(_Record):
    step: str
    error: str


class PredictionStatus(str, Enum):
    """What a prediction is: ``ok`` (every stage the configuration asks for contributed),
    ``degraded`` (a coordinate, but a required stage was missing: ``missing_stages`` names them) or
    ``failed`` (no coordinate; ``failure_reason`` says why)."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"


# Names in Prediction.missing_stages: the stages a configuration can require.
STAGE_VLM = "vlm"
STAGE_GALLERY = "gallery"
STAGE_GPS_GALLERY = "gps-gallery"


class Prediction(_Record):
    """The answer for one image. ``lat``/``lon`` are None when nothing could be predicted, and then
    ``failure_reason`` says why; a failed step never turns into a made-up coordinate."""

    schema_version: str = SCHEMA_VERSION
    image: ImageRef
    lat: float | None = None
    lon: float | None = None
    place: Place | None = None
    # = levels.within_25km when levels are known: the calibrated P(error <= 25 km).
    confidence: float | None = None
    levels: LevelConfidence | None = None
    alternatives: list[Candidate] = Field(default_factory=list)
    clues: list[Clue] = Field(default_factory=list)
    sources_used: list[str] = Field(default_factory=list)
    failures: list[StepFailure] = Field(default_factory=list)
    failure_reason: str | None = None
    trace_id: str | None = None
    # Set by the locate graph; derived when not given: failed without a coordinate, degraded when
    # stages are missing, else ok.
    status: PredictionStatus = PredictionStatus.OK
    missing_stages: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _upgrade_1_0(cls, data: Any) -> Any:
        """Schema 1.0 had no status. Its graph recorded a VLM that gave nothing (server down, no usable
        reply) as a failed "reason" step with no "vlm" among the sources: read that as degraded."""
        if not isinstance(data, dict) or data.get("schema_version") != "1.0" or "status" in data:
            return data
        failures = data.get("failures") or []
        vlm_failed = any(isinstance(f, dict) and f.get("step") == "reason" for f in failures)
        if data.get("lat") is not None and vlm_failed and STAGE_VLM not in (data.get("sources_used") or []):
            return {**data, "status": PredictionStatus.DEGRADED.value, "missing_stages": [STAGE_VLM]}
        return data
    evidence: FusionEvidence | None = None

    @model_validator(mode="after")
    def _validate(self) -> Prediction:
        self.lat, self.lon = _check_lat_lon(self.lat, self.lon)
        if self.lat is None:
            if not self.failure_reason:
                raise ValueError("a prediction without a coordinate must give a failure_reason")
            self.status = PredictionStatus.FAILED
        elif self.status is PredictionStatus.FAILED:
            raise ValueError("a prediction with a coordinate cannot have status 'failed'")
        elif self.missing_stages:
            self.status = PredictionStatus.DEGRADED
        elif self.status is PredictionStatus.DEGRADED:
            raise ValueError("a degraded prediction must name its missing_stages")
        return self

    @property
    def ok(self) -> bool:
        """A coordinate was predicted (``status`` says whether every required stage took part)."""
        return self.lat is not None

    @property
    def degraded(self) -> bool:
        return self.status is PredictionStatus.DEGRADED


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


class RunSummary(_Record):
    """What one locate run concluded and how it got there, as typed objects.

    The locate pipeline builds it from its stages' outputs, next to the trace; a chat follow-up
    (and any other consumer that needs the reasoning) reads this, never the trace's JSON events,
    which are for viewing only.
    """

    schema_version: str = SCHEMA_VERSION
    prediction: Prediction
    candidates: list[Candidate] = Field(default_factory=list)  # every candidate verification ranked, best first
    rejected: list[Candidate] = Field(default_factory=list)  # candidates outside the user's constraints
    hypotheses: list[Hypothesis] = Field(default_factory=list)  # the VLM's usable answers this run relied on
    reasoning_failures: list[ReasoningFailure] = Field(default_factory=list)  # its unusable replies
    constraints: list[str] = Field(default_factory=list)  # the user's constraints, as labels
    reused_answers: bool = False  # the VLM was not asked again: earlier answers that fit were reused

    @classmethod
    def of_prediction(cls, prediction: Prediction) -> RunSummary:
        """A summary that knows only the prediction (its alternatives stand in for the candidates)."""
        return cls(prediction=prediction, candidates=list(prediction.alternatives))
class ProgressEvent(_Record):
    """What a running locate is doing right now (terminal and web displays render these).

    ``state``: ``started`` when a step begins, ``generating`` while the VLM decodes (with token
    counts), ``finished`` when the step ends. ``tokens``: tokens the VLM has generated so far in
    this step, over all its prompts and samples; ``token_budget``: the most it may generate
    (prompts x samples x ``vlm.max_new_tokens``: an upper bound, replies usually stop sooner).
    """

    image: str
    step: str
    state: Literal["started", "generating", "finished"]
    elapsed_s: float = Field(ge=0)  # since this step started
    tokens: int | None = Field(None, ge=0)
    token_budget: int | None = Field(None, ge=0)
    error: str | None = None
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
