"""The locate graph end to end, in process: real tiny encoders + real GeoCLIP location encoder,
a 2K-point GPS gallery, and scripted / tiny / unreachable VLMs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from geosleuth.agent.graph import STEPS, LocatePipeline
from geosleuth.constraints import Constraint
from geosleuth.errors import ImageLoadError
from geosleuth.geo import haversine_km
from geosleuth.types import Prediction, Trace


def run(pipeline: LocatePipeline, path: Path, **kwargs: Any) -> Any:
    return asyncio.run(pipeline.run(str(path), **kwargs))


def lisbon_answers(doubles: Any) -> list[dict[str, Any]]:
    return [
        doubles.answer(38.72, -9.14, country="Portugal", continent="Europe", clue="azulejo tiles on walls"),
        doubles.answer(38.70, -9.18, country="Portugal", continent="Europe", clue="yellow tram"),
        doubles.answer(48.85, 2.35, country="France", continent="Europe", clue="zinc roofs"),
    ]


def test_prediction_and_trace_from_all_sources(make_resources: Any, photo: Path, doubles: Any) -> None:
    store = doubles.FixedStore(doubles.neighbors_around(doubles.LISBON, 5, prefix="lis"),
                               doubles.neighbors_around(doubles.TOKYO, 2, prefix="far"))
    vlm = doubles.ScriptedVLM(lisbon_answers(doubles))
    resources = make_resources(store=store, backend=vlm)
    outcome = run(LocatePipeline(resources), photo)
    prediction, trace = outcome.prediction, outcome.trace

    assert prediction.ok and float(haversine_km(prediction.lat, prediction.lon, *doubles.LISBON)) < 30
    assert prediction.place is not None and prediction.place.country_code == "PT"
    assert prediction.sources_used == ["gallery", "gps-gallery", "vlm"]
    assert {c.observation for c in prediction.clues} == {"azulejo tiles on walls", "yellow tram"}
    assert 0 < (prediction.confidence or 0) <= 1
    assert len(prediction.alternatives) == resources.config.verify.top_k
    assert all(a.place is not None for a in prediction.alternatives)
    assert prediction.failures == []

    assert [e.step for e in trace.events] == list(STEPS)
    assert trace.config_hash == resources.config.config_hash()
    assert trace.models["vlm"] == "scripted-vlm" and "image_encoder" in trace.models
    assert trace.prediction == prediction and prediction.trace_id == trace.trace_id
    assert {p.template_id for p in trace.prompts} == {"geo_reasoning"}
    assert all(len(p.template_hash) >= 16 for p in trace.prompts)
    events = {e.step: e for e in trace.events}
    assert len(events["reason"].outputs["raw_replies"]) == 4  # 2 variants x 2 samples
    assert len(events["reason"].outputs["hypotheses"]) == 4
    assert all("scores" in c for c in events["verify"].outputs["candidates"])
    assert events["verify"].outputs["components"]["geoclip"] == "on"
    # Per-level probabilities, each cluster's evidence per source, and which calibration made them.
    assert prediction.levels is not None and prediction.confidence == prediction.levels.within_25km
    assert prediction.evidence is not None and prediction.evidence.clusters[0].sources
    assert all(a.confidence <= prediction.confidence for a in prediction.alternatives)
    label = resources.calibration.label
    assert events["verify"].inputs["calibration"] == label == trace.models["calibration"]
    assert prediction.levels.calibration == label and len(label.split("@")[1]) == 12
    assert Trace.model_validate_json(trace.model_dump_json()) == trace  # JSON round trip, stable schema


def test_vlm_failure_still_answers_from_retrieval_and_says_so(make_resources: Any, photo: Path, doubles: Any) -> None:
    store = doubles.FixedStore(doubles.neighbors_around(doubles.NAIROBI, 5, prefix="nbo"))
    outcome = run(LocatePipeline(make_resources(store=store, backend=doubles.unreachable_vlm())), photo)
    prediction = outcome.prediction
    assert prediction.ok
    assert "vlm" not in prediction.sources_used and "gallery" in prediction.sources_used
    [failure] = prediction.failures
    assert failure.step == "reason" and "answered from retrieval" in failure.error
    assert "connection refused" in failure.error


def test_vlm_step_crashing_is_recorded_not_hidden(make_resources: Any, photo: Path, doubles: Any) -> None:
    broken = doubles.ScriptedVLM(fail=RuntimeError("CUDA out of memory"))
    outcome = run(LocatePipeline(make_resources(backend=broken)), photo)
    assert outcome.prediction.ok and outcome.prediction.sources_used == ["gps-gallery"]
    assert "RuntimeError: CUDA out of memory" in outcome.prediction.failures[0].error
    reason_event = next(e for e in outcome.trace.events if e.step == "reason")
    assert reason_event.error and "CUDA out of memory" in reason_event.error


def test_vlm_misconfiguration_is_raised_not_hidden(make_resources: Any, photo: Path, doubles: Any) -> None:
    from geosleuth.errors import VLMError

    refused = doubles.ScriptedVLM(fail=VLMError("the VLM server refused the API key (HTTP 401)"))
    with pytest.raises(VLMError, match="API key"):
        run(LocatePipeline(make_resources(backend=refused)), photo)


def test_no_vlm_configured_answers_from_retrieval(make_resources: Any, photo: Path) -> None:
    outcome = run(LocatePipeline(make_resources()), photo)
    assert outcome.prediction.ok and outcome.prediction.sources_used == ["gps-gallery"]
    assert outcome.prediction.failures == []
    reason_event = next(e for e in outcome.trace.events if e.step == "reason")
    assert "vlm.backend is 'none'" in reason_event.outputs["skipped"]
    assert outcome.trace.models["vlm"] == "none"


def test_fresh_install_without_image_gallery(make_resources: Any, photo: Path, doubles: Any) -> None:
    outcome = run(LocatePipeline(make_resources(backend=doubles.ScriptedVLM(lisbon_answers(doubles)))), photo)
    assert outcome.prediction.sources_used == ["gps-gallery", "vlm"]
    verify_event = next(e for e in outcome.trace.events if e.step == "verify")
    assert verify_event.outputs["components"]["gallery"].startswith("not applicable")


def test_no_candidate_at_all_gives_no_coordinate_and_says_why(make_resources: Any, photo: Path, doubles: Any) -> None:
    outcome = run(LocatePipeline(make_resources(gps=False, backend=doubles.unreachable_vlm())), photo)
    prediction = outcome.prediction
    assert prediction.lat is None and prediction.lon is None and prediction.alternatives == []
    assert "no image gallery configured" in (prediction.failure_reason or "")
    assert "no GPS gallery" in (prediction.failure_reason or "")
    assert "connection refused" in (prediction.failure_reason or "")
    assert [e.step for e in outcome.trace.events] == list(STEPS)


def test_constraint_moves_the_answer_inside_it(make_resources: Any, photo: Path, doubles: Any) -> None:
    store = doubles.FixedStore(doubles.neighbors_around(doubles.LISBON, 5, prefix="lis"))
    pipeline = LocatePipeline(make_resources(store=store, backend=doubles.ScriptedVLM(lisbon_answers(doubles))))
    free = run(pipeline, photo).prediction
    assert free.place is not None and free.place.country_code == "PT"

    constrained = run(pipeline, photo, constraints=[Constraint.in_continent("South America")]).prediction
    assert constrained.ok and constrained.place is not None and constrained.place.continent == "South America"
    assert all(a.place is not None and a.place.continent == "South America" for a in constrained.alternatives)


def test_constraint_nothing_fits_gives_no_coordinate(make_resources: Any, photo: Path, doubles: Any) -> None:
    store = doubles.FixedStore(doubles.neighbors_around(doubles.LISBON, 5, prefix="lis"))
    resources = make_resources(store=store, gps=False)
    prediction = run(LocatePipeline(resources), photo, constraints=[Constraint.in_country("JP", "Japan")]).prediction
    assert prediction.lat is None and "in Japan" in (prediction.failure_reason or "")


def test_exclusions_reach_the_gallery(make_resources: Any, photo: Path, doubles: Any) -> None:
    neighbors = doubles.neighbors_around(doubles.LISBON, 3, prefix="lis", author="alice")
    store = doubles.FixedStore(neighbors)
    prediction = run(LocatePipeline(make_resources(store=store)), photo,
                     exclude_ids=["lis-0"], exclude_authors=["alice"]).prediction
    assert store.calls[0]["exclude_ids"] == ("lis-0",) and store.calls[0]["exclude_authors"] == ("alice",)
    assert "gallery" not in prediction.sources_used  # alice's pictures were all excluded


def test_bad_image_raises_naming_the_file(make_resources: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        run(LocatePipeline(make_resources()), broken)


def test_stream_reports_each_step_then_the_result(make_resources: Any, photo: Path) -> None:
    pipeline = LocatePipeline(make_resources())

    async def collect() -> list[tuple[str, dict[str, Any]]]:
        return [item async for item in pipeline.stream(str(photo))]

    items = asyncio.run(collect())
    assert [step for step, _ in items] == [*STEPS, "done"]
    assert all(update["event"].step == step for step, update in items[:-1])
    done = items[-1][1]
    assert isinstance(done["prediction"], Prediction) and done["trace"].prediction == done["prediction"]


def test_end_to_end_with_tiny_llava(make_resources: Any, base_config: Any, tiny_vlm_dir: Path, photo: Path,
                                     doubles: Any) -> None:
    """The real in-process VLM path (tiny random LLaVA: its replies are noise, so they fail validation)."""
    from geosleuth.vlm.transformers_backend import TransformersBackend

    config = base_config.model_copy(deep=True)
    config.vlm.backend = "transformers"
    config.vlm.model = str(tiny_vlm_dir)
    config.vlm.samples_per_variant = 1
    config.vlm.max_new_tokens = 16
    backend = TransformersBackend(config.vlm)
    store = doubles.FixedStore(doubles.neighbors_around(doubles.PARIS, 5, prefix="par"))
    outcome = run(LocatePipeline(make_resources(store=store, backend=backend, config=config)), photo)
    prediction, trace = outcome.prediction, outcome.trace
    assert isinstance(prediction, Prediction) and prediction.ok
    assert trace.models["vlm"] == str(tiny_vlm_dir)
    reason_event = next(e for e in trace.events if e.step == "reason")
    replies = reason_event.outputs["raw_replies"]
    assert replies, "the tiny VLM's raw replies are kept in the trace"
    usable = len(reason_event.outputs["hypotheses"])
    if usable == 0:  # the expected case for random weights: said so, answered from retrieval
        assert any(f.step == "reason" for f in prediction.failures)
        assert "vlm" not in prediction.sources_used
    Trace.model_validate_json(trace.model_dump_json())


def test_end_to_end_with_real_store_and_tiny_llava(base_config: Any, synthetic_store: Path, tiny_vlm_dir: Path,
                                                   tmp_path: Path) -> None:
    """Everything real and loaded from the configuration: tiny CLIP + GeoCLIP head, GeoCLIP location
    encoder, 2K GPS gallery, a synthetic FAISS gallery store, the tiny LLaVA in process."""
    from geosleuth.api import Geolocator

    # A gallery photo as the query: excluding it by id must keep it out of its own neighbours.
    query = synthetic_store.parent / "gallery" / "images" / "JP" / "JP_0000.png"
    config = base_config.model_copy(deep=True)
    config.index.gallery = synthetic_store
    config.vlm.backend = "transformers"
    config.vlm.model = str(tiny_vlm_dir)
    config.vlm.samples_per_variant = 1
    config.vlm.max_new_tokens = 16
    with Geolocator.from_config(config) as geo:
        prediction, trace = geo.locate_with_trace(query, exclude_ids=["images/JP/JP_0000.png"])
    assert prediction.ok and prediction.place is not None
    assert "gallery" in prediction.sources_used and "gps-gallery" in prediction.sources_used
    assert trace.models["gallery"].startswith(str(synthetic_store)) and "35 images" in trace.models["gallery"]
    assert trace.models["vlm"] == str(tiny_vlm_dir)
    retrieve_event = next(e for e in trace.events if e.step == "retrieve")
    neighbors = retrieve_event.outputs["neighbors"]
    assert len(neighbors) == config.retrieval.k_neighbors
    assert "images/JP/JP_0000.png" not in {n["id"] for n in neighbors}
    assert all(n["place"]["country_code"] for n in neighbors)
    assert len(retrieve_event.outputs["dissimilar"]) == config.retrieval.k_dissimilar
    assert [e.step for e in trace.events] == list(STEPS)
    assert Trace.model_validate_json(trace.model_dump_json()) == trace
