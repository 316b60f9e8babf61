"""The in-process transformers backend on a tiny random LLaVA: the real processor + chat template +
generate path, constrained decoding, micro-batching, and the reason stage end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from geosleuth.agent.reason import reason
from geosleuth.errors import ModelNotAvailableError
from geosleuth.prompts.schema import answer_json_schema, answer_token_budget, parse_answer
from geosleuth.types import GalleryNeighbor, RetrievalResult
from geosleuth.vlm.backends import ChatMessage, VLMBackend, VLMRequest
from geosleuth.vlm.registry import create_backend
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
    replies = asyncio.run(tiny_backend.generate(request))
    assert len(replies) == 3 and all(isinstance(r.text, str) for r in replies)
    # Free text (no schema) from a random model runs to the limit: reported as cut off.
    assert all(r.finish_reason == "length" and r.tokens == 12 for r in replies)


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


def test_reason_end_to_end_every_sample_is_a_schema_valid_hypothesis(
    tiny_backend: TransformersBackend, image, geocoder, make_config
) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    # A budget of one token per character fits the longest answer a byte-level random model writes.
    config = make_config(
        **{
            "prompts.neighbor_counts": [0, 2],
            "vlm.samples_per_variant": 2,
            "vlm.max_new_tokens": answer_token_budget(chars_per_token=1.0),
        }
    )
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id=f"g{i}", lat=10.0 + i, lon=20.0 + i, similarity=0.8) for i in range(3)]
    )
    result = asyncio.run(reason(image, retrieval, tiny_backend, config, geocoder))
    # 2 variants x 2 samples: every sample ends as exactly one hypothesis, abstention or failure.
    outcomes = [(h.variant, h.sample_index) for h in result.hypotheses] + [
        (f.variant, f.sample_index) for f in result.failures
    ] + [(a.variant, a.sample_index) for a in result.abstentions]
    assert sorted(outcomes) == [("neighbors-0", 0), ("neighbors-0", 1), ("neighbors-2", 0), ("neighbors-2", 1)]
    # Constrained decoding: random weights, and still every reply is a valid answer (a point, or a
    # null coordinate with a reason), first time.
    assert result.failures == []
    assert len(result.hypotheses) + len(result.abstentions) == 4
    assert all(a.reason for a in result.abstentions)
    for hypothesis in result.hypotheses:
        assert -90 <= hypothesis.lat <= 90 and hypothesis.raw_text
        assert hypothesis.template_id == "geo_reasoning"
    assert len(result.prompts) == 2 and len(result.raw_replies) == 4


def test_missing_model_raises_before_anything_runs(tmp_path: Path, make_config) -> None:
    config = make_config(**{"vlm.model": str(tmp_path / "no-such-model")})
    with pytest.raises(ModelNotAvailableError, match="no-such-model"):
        create_backend(config.vlm)


def test_concurrent_schema_requests_are_batched_and_all_valid(tiny_backend: TransformersBackend, image) -> None:
    import torch

    torch.manual_seed(1)
    schema = answer_json_schema()

    def request(text: str) -> VLMRequest:
        return VLMRequest(
            messages=[ChatMessage("user", text, [image])], json_schema=schema, n=2, temperature=1.0,
            max_tokens=answer_token_budget(chars_per_token=1.0),
        )

    async def many() -> list:
        return await asyncio.gather(*(tiny_backend.generate(request(f"Where? #{i}")) for i in range(4)))

    before = (tiny_backend.batcher.batches_run, tiny_backend.batcher.items_run)
    results = asyncio.run(many())
    replies = [reply for group in results for reply in group]
    assert len(replies) == 8
    for reply in replies:
        assert reply.finish_reason == "stop", reply
        parse_answer(reply.text)  # raises when a reply breaks the schema
    batches = tiny_backend.batcher.batches_run - before[0]
    assert tiny_backend.batcher.items_run - before[1] == 4
    assert batches < 4  # the four requests did not run one by one


def test_a_reply_that_hits_the_token_limit_is_reported_cut_off(tiny_backend: TransformersBackend, image) -> None:
    request = VLMRequest(
        messages=[ChatMessage("user", "Where?", [image])], json_schema=answer_json_schema(), n=1,
        temperature=0.0, max_tokens=6,
    )
    (reply,) = asyncio.run(tiny_backend.generate(request))
    assert reply.cut_off and reply.tokens == 6
    assert '{"clues":[{"observation":"'.startswith(reply.text)  # the grammar held while it lasted


def test_a_cuda_device_without_a_gpu_is_a_clear_config_error(tiny_vlm_dir: Path, make_config) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from geosleuth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"vlm.device='cuda' but no CUDA GPU"):
        create_backend(make_config(**{"vlm.model": str(tiny_vlm_dir), "vlm.device": "cuda"}).vlm)


def test_a_shared_image_and_prompt_start_are_encoded_once_with_the_same_answers(
    tiny_backend: TransformersBackend, image
) -> None:
    from geosleuth.vlm.prefix_reuse import shared_prefix_inputs

    question = "Where was this photo taken? Look at the signs, the vegetation and the road markings first. "
    requests = [
        VLMRequest([ChatMessage("user", question + extra, [image])], json_schema=answer_json_schema(), n=1,
                   temperature=0.0, max_tokens=40)
        for extra in ("Zero shot.", "Nearby gallery images: 48.85, 2.35 (Paris); 40.42, -3.70 (Madrid).")
    ]
    conversations = [tiny_backend._conversation(r) for r in requests]
    inputs = tiny_backend.processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        **tiny_backend._padding,
    )
    shared = shared_prefix_inputs(tiny_backend.model, inputs, tiny_backend.pad_token_id)
    assert shared is not None  # same image, long common start: the prefix path applies
    answers = {}
    try:
        for reuse in (False, True):
            tiny_backend.prefix_reuse = reuse
            answers[reuse] = [[r.text for r in replies] for replies in tiny_backend._run_batch(requests)]
    finally:
        tiny_backend.prefix_reuse = True
    assert answers[True] == answers[False]  # greedy decoding: the same tokens either way


def test_the_batch_worker_decodes_on_all_the_loading_threads_cores(tiny_vlm_dir: Path, make_config, image) -> None:
    """A thread inherits torch's thread count last set anywhere in the process (by any library or
    worker): the backend's worker, started later, must still use the cores the loader had."""
    import threading

    cores = torch.get_num_threads()
    if cores < 2:
        pytest.skip("one torch thread here: nothing to lose")

    def set_threads(n: int) -> None:
        worker = threading.Thread(target=torch.set_num_threads, args=(n,))
        worker.start()
        worker.join()

    backend = TransformersBackend(make_config(**{"vlm.model": str(tiny_vlm_dir)}).vlm)
    seen: list[int] = []
    request = VLMRequest([ChatMessage("user", "Where is this?", [image])], n=1, temperature=0.0, max_tokens=4,
                         on_tokens=lambda _count: seen.append(torch.get_num_threads()))
    set_threads(1)  # as a one-thread worker elsewhere in the process does
    try:
        asyncio.run(backend.generate(request))
    finally:
        set_threads(cores)  # later threads of this test process get the cores back
        asyncio.run(backend.aclose())
    assert seen and set(seen) == {cores}
