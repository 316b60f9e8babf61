"""Fixtures for the command-line tests: a realistic trace (events shaped as the locate graph records
them) whose model text contains HTML and rich markup, to check it is shown escaped; a console wide
enough that no message wraps, whatever the terminal or the temporary path's length."""

from __future__ import annotations

from pathlib import Path

import pytest

from geosleuth.types import (
    Candidate,
    CandidateSource,
    Clue,
    ClusterEvidence,
    Coordinate,
    ExifInfo,
    FusionEvidence,
    GalleryNeighbor,
    GPSCandidate,
    Hypothesis,
    ImageRef,
    LevelConfidence,
    Place,
    Prediction,
    PromptRecord,
    ReasoningFailure,
    RetrievalResult,
    SourceEvidence,
    StepFailure,
    Trace,
    TraceEvent,
)

HOSTILE = '<script>alert("x")</script> [bold red]not markup[/] & more'


def build_trace(trace_id: str = "trace-1", path: str = "photos/porto.jpg") -> Trace:
    place = Place(continent="Europe", country_code="PT", country="Portugal", admin1="Porto", city="Porto")
    image = ImageRef(path=path, exif=ExifInfo(gps=Coordinate(lat=41.1496, lon=-8.6110)))
    clue = Clue(observation=f"azulejo tiles {HOSTILE}", implication="Portugal")
    hypotheses = [
        Hypothesis(
            clues=[clue], continent="Europe", country="Portugal", region="Norte", city="Porto",
            lat=41.15, lon=-8.62, confidence=0.7, raw_text=f'{{"city": "Porto"}} {HOSTILE}',
            template_id="geo_reasoning", template_hash="abc123def4567890", model="tiny-vlm",
            variant="neighbors-5", sample_index=0,
        ),
        Hypothesis(
            country="Spain", city="Vigo", lat=42.24, lon=-8.72, confidence=0.3, raw_text="{}",
            template_id="geo_reasoning", template_hash="abc123def4567890", model="tiny-vlm",
            variant="neighbors-0", sample_index=1,
        ),
    ]
    failure = ReasoningFailure(
        variant="neighbors-10", template_id="geo_reasoning", template_hash="abc123def4567890",
        model="tiny-vlm", error="reply is not JSON", raw_text="I think it is <b>Lisbon</b>",
    )
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id="mp16/123.jpg", lat=41.16, lon=-8.60, similarity=0.91)],
        gps_candidates=[GPSCandidate(lat=40.0, lon=-8.0, similarity=0.55, probability=0.1)],
        sources=["gallery", "gps-gallery"],
    )
    ranked = [
        Candidate(lat=41.15, lon=-8.62, source=CandidateSource.VLM, source_ref="neighbors-5#0",
                  scores={"geoclip": 0.812, "neighbor_support": 0.654, "vlm_agreement": 0.5}, score=0.731,
                  confidence=0.64, place=place),
        Candidate(lat=42.24, lon=-8.72, source=CandidateSource.VLM, source_ref="neighbors-0#1",
                  scores={"geoclip": 0.402, "neighbor_support": 0.1, "vlm_agreement": 0.25}, score=0.288,
                  confidence=0.36),
    ]
    prediction = Prediction(
        image=image, lat=41.15, lon=-8.62, place=place, confidence=0.64, alternatives=ranked,
        clues=[clue], sources_used=["vlm", "gallery"],
        failures=[StepFailure(step="reason", error="1 of 3 VLM replies were unusable (reply is not JSON)")],
        trace_id=trace_id,
        levels=LevelConfidence(country=0.93, region=0.81, city=0.66, within_25km=0.64, within_200km=0.88,
                               calibration="mine@0123456789ab"),
        evidence=FusionEvidence(
            cluster_radius_km=25.0, allowed_area_km2=5.1e8, elsewhere_log_mass=-9.0, elsewhere_posterior=0.05,
            calibration="mine@0123456789ab",
            clusters=[
                ClusterEvidence(lat=41.15, lon=-8.62, area_km2=1963.0, log_mass=-3.0, posterior=0.77, place=place,
                                members=["vlm:neighbors-5#0"],
                                sources=[SourceEvidence(source="vlm-informed", items=3, mass=0.625, log_density=-3.2,
                                                        weight=0.6),
                                         SourceEvidence(source="geoclip", items=0, mass=0.0, log_density=-8.7,
                                                        weight=1.5)]),
            ],
        ),
    )
    events = [
        TraceEvent(step="perceive", started_at=1000.0, duration_s=0.1, outputs={"image": image.model_dump()}),
        TraceEvent(step="retrieve", started_at=1000.1, duration_s=0.2, outputs=retrieval.model_dump(mode="json")),
        TraceEvent(step="reason", started_at=1000.3, duration_s=1.5, outputs={
            "hypotheses": [h.model_dump(mode="json") for h in hypotheses],
            "failures": [failure.model_dump(mode="json")],
        }),
        TraceEvent(step="verify", started_at=1001.8, duration_s=0.05, outputs={
            "candidates": [c.model_dump(mode="json") for c in ranked],
        }),
        TraceEvent(step="decide", started_at=1001.9, duration_s=0.01, outputs={"lat": 41.15, "lon": -8.62}),
    ]
    return Trace(
        trace_id=trace_id, image=image, config_hash="cfg0123456789abc", models={"vlm": "tiny-vlm"},
        events=events,
        prompts=[PromptRecord(template_id="geo_reasoning", template_hash="abc123def4567890",
                              variant="neighbors-5", model="tiny-vlm", rendered=f"Where is this? {HOSTILE}")],
        prediction=prediction,
    )


@pytest.fixture
def hostile() -> str:
    return HOSTILE


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "trace.json"
    path.write_text(build_trace().model_dump_json(indent=2))
    return path


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    """Two trace JSON files in a folder, as `geosleuth batch --trace-dir` writes them."""
    folder = tmp_path / "traces"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg.json").write_text(build_trace("t-a", "a.jpg").model_dump_json())
    (folder / "sub" / "b.jpg.json").write_text(build_trace("t-b", "sub/b.jpg").model_dump_json())
    return folder


@pytest.fixture
def traces_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "traces.jsonl"
    lines = [
        build_trace("t-a", "a.jpg").model_dump_json(),
        '{"id": "b.jpg", "trace": ' + build_trace("t-b", "b.jpg").model_dump_json() + "}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# A Geolocator test double for the command tests (the real one runs in the end-to-end tests)

LISBON = (38.7223, -9.1393)
STEPS = ("perceive", "retrieve", "reason", "verify", "decide")


class FakeGeolocator:
    """Loads each image for real (broken files raise ImageLoadError, EXIF is read) and answers
    Lisbon, or no coordinate for file names containing "nowhere"; tracks calls in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.closed = False
        self.preflight_error: Exception | None = None  # what acheck_ready raises (a server that is down)
        self.preflights = 0
        self.tools_fallback: str | None = None  # set: agent.mode=tools runs as the fixed pipeline (why)
        self.vlm_down_for: set[str] = set()  # file names answered without the VLM (degraded)
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[str] = []

    @property
    def resources(self) -> None:
        return None

    async def acheck_ready(self) -> None:
        self.preflights += 1
        if self.preflight_error is not None:
            raise self.preflight_error

    async def alocate_with_trace(self, image_path, *, top_k=None, constraint=None):
        import asyncio

        from geosleuth.imageio import load_image

        self.calls.append(str(image_path))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            ref = load_image(image_path).ref
        finally:
            self.in_flight -= 1
        trace = build_trace(trace_id=f"t-{Path(str(image_path)).stem}", path=str(image_path))
        if "nowhere" in str(image_path):
            prediction = Prediction(image=ref, failure_reason="no source proposed a candidate location (test double)",
                                    trace_id=trace.trace_id)
        else:
            base = trace.prediction
            alternatives = base.alternatives[: top_k or len(base.alternatives)]
            prediction = base.model_copy(update={"image": ref, "lat": LISBON[0], "lon": LISBON[1],
                                                 "alternatives": alternatives})
            if Path(str(image_path)).name in self.vlm_down_for:
                prediction = Prediction.model_validate({**prediction.model_dump(), "missing_stages": ["vlm"]})
        trace.image, trace.prediction = ref, prediction
        return prediction, trace

    async def alocate(self, image_path, *, top_k=None, constraint=None):
        prediction, _ = await self.alocate_with_trace(image_path, top_k=top_k)
        return prediction

    async def astream(self, image_path, *, top_k=None, constraint=None, progress=False):
        prediction, trace = await self.alocate_with_trace(image_path, top_k=top_k)
        for step, event in zip(STEPS, trace.events, strict=True):
            yield step, {"event": event}
        yield "done", {"prediction": prediction, "trace": trace}

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def fake_geo(monkeypatch: pytest.MonkeyPatch) -> FakeGeolocator:
    """The commands get this double instead of a real Geolocator."""
    from geosleuth.cli import common

    fake = FakeGeolocator()
    monkeypatch.setattr(common, "open_geolocator", lambda ctx: fake)
    return fake


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Photos: porto.jpg (EXIF GPS 41.1496 N, 8.611 W), two plain ones, one that gets no
    coordinate, and two broken files."""
    from geosleuth.testing import photos

    root = tmp_path / "photos"
    photos.write_jpeg_with_gps(root / "porto.jpg", 41.1496, -8.6110)
    photos.write_photo(root / "b.png")
    photos.write_photo(root / "sub" / "c.jpg")
    photos.write_photo(root / "nowhere.jpg")
    photos.write_text_file(root / "broken.jpg")
    photos.write_truncated_jpeg(root / "sub" / "cut.jpg", keep=0.3)
    return root


# ------------------------------------------------------------------------------------------------
# Real models (tiny, random, built locally) for the end-to-end command tests


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory, tiny_vlm_dir: Path, write_tiny_config) -> Path:
    """A geosleuth.toml for the real pipeline with tiny random models: tiny CLIP + GeoCLIP's real
    heads, a 2K GPS gallery, the tiny LLaVA in process (one prompt variant, one sample)."""
    return write_tiny_config(
        tmp_path_factory.mktemp("tiny-config"),
        retrieval={"k_neighbors": 5, "k_gps": 10},
        vlm={"backend": "transformers", "model": str(tiny_vlm_dir), "device": "cpu", "samples_per_variant": 1,
             "max_new_tokens": 24, "concurrency": 2},
        prompts={"neighbor_counts": [0]},
    )
