"""The in-process transformers backend on a tiny random LLaVA: the real processor + chat template +
generate path, and the reason stage end to end (random weights: expect failures, recorded right)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from geosleuth.agent.reason import reason
from geosleuth.errors import ModelNotAvailableError
from geosleuth.types import GalleryNeighbor, RetrievalResult
from geosleuth.vlm.backends import ChatMessage, VLMBackend, VLMRequest, create_backend
from geosleuth.vlm.transformers_backend import TransformersBackend


@pytest.fixture(scope="module")
def tiny_backend(tiny_vlm_dir: Path) -> TransformersBackend:
    from geosleuth.config import Config

    config = Config.model_validate({"vlm": {"model": str(tiny_vlm_dir), "device": "cpu"}})
    backend = create_backend(config.vlm)
    assert isinstance(backend, TransformersBackend)
    return backend


def test_backend_satisfies_the_protocol(tiny_backend: TransformersBackend, tiny_vlm_dir: Path) -> None:
    assert isinstance(tiny_backend, VLMBackend)
    assert tiny_backend.model_id == str(tiny_vlm_dir)


def test_generate_returns_n_texts_for_an_image(tiny_backend: TransformersBackend, image) -> None:
    request = VLMRequest(
        messages=[ChatMessage("user", "Where was this photo taken?", [image])], n=3, temperature=1.0, max_tokens=12
    )
    texts = asyncio.run(tiny_backend.generate(request))
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_multi_turn_with_an_assistant_message(tiny_backend: TransformersBackend, image) -> None:
    request = VLMRequest(
        messages=[
            ChatMessage("user", "Where?", [image]),
            ChatMessage("assistant", "not json"),
            ChatMessage("user", "Again, as JSON."),
        ],
        n=1,
        temperature=0.0,
        max_tokens=8,
    )
    assert len(asyncio.run(tiny_backend.generate(request))) == 1


def test_reason_end_to_end_gives_hypotheses_or_recorded_failures(
    tiny_backend: TransformersBackend, image, geocoder, make_config
) -> None:
    config = make_config(
        **{"prompts.neighbor_counts": [0, 2], "vlm.samples_per_variant": 2, "vlm.max_new_tokens": 24}
    )
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id=f"g{i}", lat=10.0 + i, lon=20.0 + i, similarity=0.8) for i in range(3)]
    )
    result = asyncio.run(reason(image, retrieval, tiny_backend, config, geocoder))
    # 2 variants x 2 samples: every sample ends as exactly one hypothesis or one failure.
    outcomes = [(h.variant, h.sample_index) for h in result.hypotheses] + [
        (f.variant, f.sample_index) for f in result.failures
    ]
    assert sorted(outcomes) == [("neighbors-0", 0), ("neighbors-0", 1), ("neighbors-2", 0), ("neighbors-2", 1)]
    for failure in result.failures:
        assert failure.raw_text is not None and failure.raw_text in result.raw_replies
        assert "after one repair" in failure.error
        assert failure.model == tiny_backend.model_id and failure.template_id == "geo_reasoning"
    for hypothesis in result.hypotheses:
        assert -90 <= hypothesis.lat <= 90 and hypothesis.raw_text
    # One prompt record per variant plus one per repair; every reply kept.
    repairs = [p for p in result.prompts if p.template_id == "answer_repair"]
    assert len(result.prompts) == 2 + len(repairs)
    assert len(result.raw_replies) == 4 + len(repairs)


def test_missing_model_raises_before_anything_runs(tmp_path: Path, make_config) -> None:
    config = make_config(**{"vlm.model": str(tmp_path / "no-such-model")})
    with pytest.raises(ModelNotAvailableError, match="no-such-model"):
        create_backend(config.vlm)
