"""The reason stage with a scripted backend: variants, parsing, one repair, failures, trace records."""

from __future__ import annotations

import asyncio

import pytest

from geosleuth.agent.reason import plan_variants, reason
from geosleuth.errors import ConfigError, ModelNotAvailableError, VLMError
from geosleuth.prompts.render import load_template
from geosleuth.types import (
    GalleryNeighbor,
    GPSCandidate,
    Place,
    RetrievalResult,
)
from geosleuth.vlm.backends import VLMUnavailableError

ONE_VARIANT = {"prompts.neighbor_counts": [0], "vlm.samples_per_variant": 1}


def _retrieval(n_neighbors: int = 3, n_dissimilar: int = 2, n_gps: int = 3) -> RetrievalResult:
    return RetrievalResult(
        neighbors=[
            GalleryNeighbor(id=f"n{i}", lat=35.0 + i, lon=139.0 + i, similarity=0.9 - 0.1 * i)
            for i in range(n_neighbors)
        ],
        dissimilar=[
            GalleryNeighbor(
                id=f"d{i}", lat=-33.87, lon=151.21, similarity=0.05,
                place=Place(continent="Oceania", country="Australia", city=f"Testplace{i}"),
            )
            for i in range(n_dissimilar)
        ],
        gps_candidates=[GPSCandidate(lat=48.0 + i, lon=2.0 + i, similarity=0.5) for i in range(n_gps)],
    )


def _run(coro):
    return asyncio.run(coro)


def test_variants_are_capped_by_what_was_retrieved_and_deduplicated() -> None:
    variants = plan_variants(_retrieval(3, 2, 1), [0, 5, 10, 15], include_dissimilar=True)
    assert [v.name for v in variants] == ["neighbors-0", "neighbors-3"]
    assert (variants[1].n_neighbors, variants[1].n_dissimilar, variants[1].n_gps) == (3, 2, 1)
    assert (variants[0].n_neighbors, variants[0].n_dissimilar, variants[0].n_gps) == (0, 0, 0)
    # Nothing retrieved: every count collapses to the zero-shot prompt, asked once.
    assert [v.name for v in plan_variants(RetrievalResult(), [0, 5, 10], include_dissimilar=True)] == ["neighbors-0"]
    # GPS candidates alone (no image gallery) still give retrieval-augmented variants.
    only_gps = plan_variants(_retrieval(0, 0, 20), [0, 5, 10], include_dissimilar=True)
    assert [(v.name, v.n_gps) for v in only_gps] == [("neighbors-0", 0), ("neighbors-5", 5), ("neighbors-10", 10)]
    assert plan_variants(_retrieval(), [5], include_dissimilar=False)[0].n_dissimilar == 0
    with pytest.raises(ConfigError):
        plan_variants(_retrieval(), [], include_dissimilar=True)
    with pytest.raises(ConfigError):
        plan_variants(_retrieval(), [-1], include_dissimilar=True)


def test_valid_replies_become_hypotheses_with_full_provenance(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.neighbor_counts": [0, 2], "vlm.samples_per_variant": 2})
    backend = doubles.ScriptedBackend(
        [lambda r: [doubles.answer_json(), doubles.answer_json(country="United States of America")]] * 2
    )
    result = _run(reason(image, _retrieval(), backend, config, geocoder))
    template = load_template("geo_reasoning")
    assert not result.failures
    assert len(result.hypotheses) == 4 and len(result.raw_replies) == 4
    assert {(h.variant, h.sample_index) for h in result.hypotheses} == {
        ("neighbors-0", 0), ("neighbors-0", 1), ("neighbors-2", 0), ("neighbors-2", 1),
    }
    for h in result.hypotheses:
        assert (h.template_id, h.template_hash, h.model) == ("geo_reasoning", template.sha256, "scripted-vlm")
        assert (h.lat, h.lon) == pytest.approx((48.8566, 2.3522))
        assert h.raw_text in result.raw_replies
    assert sorted(h.country_code for h in result.hypotheses) == ["FR", "FR", "US", "US"]  # names -> ISO codes
    # Each request: the image, the schema, n samples.
    for request in backend.requests:
        assert request.n == 2 and request.json_schema is not None
        assert request.messages[0].images == [image]
    # Prompt records: one per variant, with the rendered text.
    assert [(p.variant, p.template_id) for p in result.prompts] == [
        ("neighbors-0", "geo_reasoning"), ("neighbors-2", "geo_reasoning"),
    ]
    zero_shot, rag = (p.rendered for p in result.prompts)
    assert "35.0000, 139.0000" not in zero_shot
    assert "35.0000, 139.0000" in rag and "36.0000, 140.0000" in rag and "37.0000" not in rag  # capped at 2
    assert "Japan" in rag  # neighbours without a place are reverse-geocoded
    assert "Testplace0" in rag  # a place retrieval already set is used as is
    assert "48.0000, 2.0000" in rag  # GPS-gallery candidates


def test_garbage_then_repaired_gives_a_hypothesis_from_the_repair_turn(doubles, image, geocoder, make_config) -> None:
    backend = doubles.ScriptedBackend([["I think it is Paris."], [doubles.answer_json(latitude=40.0)]])
    result = _run(reason(image, RetrievalResult(), backend, make_config(**ONE_VARIANT), geocoder))
    assert not result.failures
    [hypothesis] = result.hypotheses
    assert hypothesis.lat == 40.0
    assert hypothesis.template_id == "answer_repair"  # the prompt that produced it
    assert [p.template_id for p in result.prompts] == ["geo_reasoning", "answer_repair"]
    assert result.raw_replies == ["I think it is Paris.", doubles.answer_json(latitude=40.0)]
    repair = backend.requests[1]
    assert [m.role for m in repair.messages] == ["user", "assistant", "user"]
    assert repair.messages[0].images == [image]
    assert repair.messages[1].text == "I think it is Paris."
    assert "not valid JSON" in repair.messages[2].text  # the validation error is quoted
    assert repair.n == 1


@pytest.mark.parametrize(
    ("first", "expected_error"),
    [
        ("no json here", "not valid JSON"),
        ("missing", "latitude: missing"),
        ("out-of-range", "latitude"),
    ],
)
def test_invalid_twice_is_a_failure_with_the_raw_text(
    doubles, image, geocoder, make_config, first, expected_error
) -> None:
    replies = {
        "no json here": "no json here",
        "missing": doubles.answer_json(latitude=...),
        "out-of-range": doubles.answer_json(latitude=91.5),
    }
    bad = replies[first]
    backend = doubles.ScriptedBackend([[bad], ["still {not json"]])
    result = _run(reason(image, RetrievalResult(), backend, make_config(**ONE_VARIANT), geocoder))
    assert result.hypotheses == []  # never a default point such as (0, 0)
    [failure] = result.failures
    assert failure.raw_text == bad
    assert expected_error in failure.error and "after one repair" in failure.error
    assert (failure.variant, failure.sample_index, failure.template_id) == ("neighbors-0", 0, "geo_reasoning")
    assert len(backend.requests) == 2  # exactly one repair attempt
    assert result.raw_replies == [bad, "still {not json"]


def test_only_invalid_samples_are_repaired(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.neighbor_counts": [0], "vlm.samples_per_variant": 3})
    backend = doubles.ScriptedBackend(
        [[doubles.answer_json(), "garbage", doubles.answer_json(longitude=10.0)], ["more garbage"]]
    )
    result = _run(reason(image, RetrievalResult(), backend, config, geocoder))
    assert [h.sample_index for h in result.hypotheses] == [0, 2]
    assert [f.sample_index for f in result.failures] == [1]
    assert len(backend.requests) == 2


def test_server_down_becomes_failures_for_every_sample(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.neighbor_counts": [0, 5], "vlm.samples_per_variant": 2})
    down = VLMUnavailableError("no answer from the VLM server at http://127.0.0.1:1/v1 after 4 attempt(s)", 4)
    backend = doubles.ScriptedBackend([down, [doubles.answer_json(), doubles.answer_json()]])
    result = _run(reason(image, _retrieval(), backend, config, geocoder))
    assert len(result.hypotheses) == 2
    assert len(result.failures) == 2
    assert {f.variant for f in result.failures} == {"neighbors-0"}  # variants run in order of the config
    assert all("no answer from the VLM server" in f.error and f.raw_text is None for f in result.failures)


def test_misconfiguration_raises(doubles, image, geocoder, make_config) -> None:
    backend = doubles.ScriptedBackend([VLMError("the VLM server does not serve model 'x'")])
    with pytest.raises(VLMError, match="does not serve"):
        _run(reason(image, RetrievalResult(), backend, make_config(**ONE_VARIANT), geocoder))
    backend = doubles.ScriptedBackend([ModelNotAvailableError("model 'x' is not on this machine")])
    with pytest.raises(ModelNotAvailableError):
        _run(reason(image, RetrievalResult(), backend, make_config(**ONE_VARIANT), geocoder))


def test_unknown_reasoning_template_is_a_config_error(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.reasoning_template": "nope"})
    with pytest.raises(ConfigError, match="nope"):
        _run(reason(image, RetrievalResult(), doubles.ScriptedBackend([]), config, geocoder))


def test_temperature_zero_asks_for_one_sample(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.neighbor_counts": [0], "vlm.samples_per_variant": 4, "vlm.temperature": 0.0})
    backend = doubles.ScriptedBackend([[doubles.answer_json()]])
    result = _run(reason(image, RetrievalResult(), backend, config, geocoder))
    assert backend.requests[0].n == 1 and len(result.hypotheses) == 1


HINT = "The user says it is in South America (constraint: continent South America)"


def test_a_hint_is_shown_to_the_vlm_in_every_variant_and_recorded(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.neighbor_counts": [0, 2], "vlm.samples_per_variant": 1})
    backend = doubles.ScriptedBackend([[doubles.answer_json()]] * 2)
    result = _run(reason(image, _retrieval(), backend, config, geocoder, hint=f"  {HINT}\n"))
    assert len(backend.requests) == 2
    for request, record in zip(backend.requests, result.prompts, strict=True):
        sent = request.messages[0].text
        assert HINT in sent and "What the user told us" in sent
        assert sent == record.rendered  # the trace records exactly what the VLM was shown
    assert load_template("geo_reasoning").version != "1"  # the template changed: its version says so


@pytest.mark.parametrize("hint", [None, "", "   "])
def test_without_a_hint_there_is_no_user_block(doubles, image, geocoder, make_config, hint) -> None:
    backend = doubles.ScriptedBackend([[doubles.answer_json()]])
    result = _run(reason(image, RetrievalResult(), backend, make_config(**ONE_VARIANT), geocoder, hint=hint))
    [record] = result.prompts
    assert "What the user told us" not in backend.requests[0].messages[0].text
    assert "What the user told us" not in record.rendered


def test_an_answer_repeating_a_coordinate_from_its_own_prompt_is_an_echo(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.neighbor_counts": [0, 2], "vlm.samples_per_variant": 2})
    # Sample 0 repeats the first shown neighbour (35, 139) to within ~1 km; sample 1 says Paris.
    echo = doubles.answer_json(latitude=35.005, longitude=139.005, country="Japan")
    backend = doubles.ScriptedBackend([lambda r: [echo, doubles.answer_json()]] * 2)
    result = _run(reason(image, _retrieval(), backend, config, geocoder))
    by_key = {(h.variant, h.sample_index): h for h in result.hypotheses}
    # The zero-shot prompt showed nothing: the same coordinate there is the model's own answer.
    assert by_key[("neighbors-0", 0)].echo_of is None and by_key[("neighbors-0", 0)].shown_coordinates == 0
    informed = by_key[("neighbors-2", 0)]
    assert informed.echo_of is not None and informed.echo_of.startswith("neighbor 1 (35.0000, 139.0000)")
    assert informed.shown_coordinates == 2 + 2 + 2  # neighbours, dissimilar, GPS candidates shown
    assert by_key[("neighbors-2", 1)].echo_of is None  # Paris is 50 km+ from every shown point


def test_a_model_that_cannot_tell_abstains_instead_of_inventing_a_point(doubles, image, geocoder, make_config) -> None:
    config = make_config(**{"prompts.neighbor_counts": [0], "vlm.samples_per_variant": 2})
    cannot = doubles.answer_json(latitude=None, longitude=None, cannot_tell_because="only a white wall is visible")
    backend = doubles.ScriptedBackend([[cannot, doubles.answer_json()]])
    result = _run(reason(image, _retrieval(), backend, config, geocoder))
    assert [h.sample_index for h in result.hypotheses] == [1]
    assert not result.failures
    assert [(a.sample_index, a.reason) for a in result.abstentions] == [(0, "only a white wall is visible")]
    assert result.abstentions[0].raw_text == cannot


