"""Chat follow-up answers with a scripted backend: the run summary quoted, cut to fit, history kept."""

from __future__ import annotations

import asyncio

import pytest

from geosleuth.agent.chat.followup import answer_followup
from geosleuth.errors import VLMError
from geosleuth.prompts.render import load_template
from geosleuth.types import (
    Abstention,
    Candidate,
    CandidateSource,
    Clue,
    ClusterEvidence,
    FusionEvidence,
    Hypothesis,
    ImageRef,
    LevelConfidence,
    Place,
    Prediction,
    RunSummary,
    SourceEvidence,
    StepFailure,
)


def _run(coro):
    return asyncio.run(coro)


def test_followup_answers_from_the_prediction(doubles, image, make_config) -> None:
    prediction = Prediction(
        image=ImageRef(path="photo.jpg"),
        lat=48.85, lon=2.35, confidence=0.4,
        place=Place(continent="Europe", country="France", city="Paris"),
        clues=[Clue(observation="blue street sign", implication="Paris")],
        alternatives=[Candidate(lat=45.76, lon=4.84, source=CandidateSource.VLM, confidence=0.2)],
    )
    backend = doubles.ScriptedBackend([["  Because of the street sign.  "], ["Lyon is less likely."]])
    config = make_config()
    answer = _run(answer_followup(backend, image, prediction, "Why Paris?", config=config))
    assert answer == "Because of the street sign."
    [message] = backend.requests[0].messages
    assert message.images == [image] and backend.requests[0].json_schema is None
    for expected in ("48.8500, 2.3500", "Europe > France > Paris", "blue street sign", "45.7600, 4.8400", "Why Paris?"):
        assert expected in message.text
    again = _run(
        answer_followup(backend, image, prediction, "And Lyon?", config=config, history=[("Why Paris?", answer)])
    )
    assert again == "Lyon is less likely."
    assert [m.role for m in backend.requests[1].messages] == ["user", "assistant", "user"]
    assert backend.requests[1].messages[2].text == "And Lyon?"


def test_followup_empty_reply_is_an_error(doubles, image, make_config) -> None:
    prediction = Prediction(image=ImageRef(path="p.jpg"), failure_reason="no candidates")
    backend = doubles.ScriptedBackend([["   "]])
    with pytest.raises(VLMError, match="empty answer"):
        _run(answer_followup(backend, None, prediction, "Where?", config=make_config()))
    assert backend.requests[0].messages[0].images == []
    assert "no candidates" in backend.requests[0].messages[0].text


def _hypothesis(variant: str, index: int, clue: str, *, country: str = "Peru", city: str = "Lima") -> Hypothesis:
    return Hypothesis(
        clues=[Clue(observation=clue, implication=f"points to {country}")],
        continent="South America", country=country, city=city, lat=-12.05, lon=-77.04, confidence=0.7,
        raw_text="{}", template_id="geo_reasoning", template_hash="h", model="scripted-vlm",
        variant=variant, sample_index=index,
    )


def _summary(prediction: Prediction, candidates: list[Candidate], hypotheses: list[Hypothesis]) -> RunSummary:
    """A run summary as the locate pipeline builds it (typed: no trace JSON involved)."""
    return RunSummary(prediction=prediction, candidates=candidates, hypotheses=hypotheses)


def test_followup_quotes_the_run_summary(doubles, image, make_config) -> None:
    ranked = [
        Candidate(lat=-12.05, lon=-77.04, source=CandidateSource.VLM, score=0.83, confidence=0.6,
                  scores={"geoclip": 0.71, "vlm_agreement": 0.94}, place=Place(country="Peru", city="Lima")),
        Candidate(lat=-33.45, lon=-70.67, source=CandidateSource.GPS_GALLERY, score=0.41, confidence=0.3),
    ]
    prediction = Prediction(
        image=ImageRef(path="photo.jpg"), lat=-12.05, lon=-77.04, confidence=0.6, alternatives=ranked[:1],
        sources_used=["gps-gallery", "vlm"],
        failures=[StepFailure(step="reason", error="1 of 3 VLM replies were unusable (not JSON)")],
    )
    hypotheses = [_hypothesis("neighbors-0", 0, "yellow taxis"), _hypothesis("neighbors-5", 0, "adobe walls")]
    backend = doubles.ScriptedBackend([["Because of the taxis."]])
    summary = _summary(prediction, ranked, hypotheses)
    _run(answer_followup(backend, image, summary, "Why Lima?", config=make_config()))
    text = backend.requests[0].messages[0].text
    for expected in (
        "score 0.83", "geoclip 0.71", "vlm_agreement 0.94",  # the top candidate with its component scores
        "-33.4500, -70.6700",  # a ranked candidate the prediction's alternatives do not list
        "neighbors-0", "yellow taxis", "neighbors-5", "adobe walls",  # the VLM's answers per variant
        "gps-gallery, vlm", "not JSON", "Why Lima?",
    ):
        assert expected in text
    assert load_template("chat_followup").version != "1"


def test_followup_prompt_stays_small_for_a_huge_trace(doubles, image, make_config) -> None:
    long_text = "a very long observation " * 200
    ranked = [
        Candidate(lat=-12.0 - i * 0.01, lon=-77.0, source=CandidateSource.VLM, score=0.9 - i * 1e-4,
                  confidence=0.001, scores={"geoclip": 0.5}, place=Place(country="Peru", city=long_text))
        for i in range(500)
    ]
    hypotheses = [
        _hypothesis(f"neighbors-{i % 4}", i // 4, long_text, city=long_text).model_copy(
            update={"clues": [Clue(observation=f"clue {j} {long_text}", implication=long_text) for j in range(10)]}
        )
        for i in range(200)
    ]
    prediction = Prediction(
        image=ImageRef(path="photo.jpg"), lat=-12.0, lon=-77.0, confidence=0.1, alternatives=ranked[:50],
        clues=[Clue(observation=long_text, implication=long_text)] * 100,
        sources_used=["vlm"], failures=[StepFailure(step="reason", error=long_text)] * 50,
    )
    backend = doubles.ScriptedBackend([["Peru."]])
    summary = _summary(prediction, ranked, hypotheses)
    _run(answer_followup(backend, image, summary, "Why Peru?", config=make_config()))
    text = backend.requests[0].messages[0].text
    # About 2,000 tokens at most, whatever the trace holds (about 20 million characters here).
    assert len(text) < 8000
    assert "score 0.90" in text and "top 5 of 500" in text
    # Each variant is represented before any variant shows a second answer.
    assert all(f"neighbors-{i}:" in text for i in range(4))
    assert text.rstrip().endswith("Why Peru?")


def test_followup_says_which_hints_applied_and_whether_answers_were_reused(doubles, image, make_config) -> None:
    lima = Candidate(lat=-12.05, lon=-77.04, source=CandidateSource.VLM, score=0.8, confidence=0.7)
    outside = [Candidate(lat=38.7, lon=-9.1, source=CandidateSource.VLM, score=0.9, confidence=0.0)] * 2
    prediction = Prediction(image=ImageRef(path="photo.jpg"), lat=-12.05, lon=-77.04, confidence=0.7,
                            sources_used=["vlm"])
    summary = RunSummary(prediction=prediction, candidates=[lima], rejected=outside,
                         hypotheses=[_hypothesis("neighbors-0", 0, "adobe walls")], constraints=["in Peru"],
                         reused_answers=True)
    backend = doubles.ScriptedBackend([["Because you said Peru."]])
    _run(answer_followup(backend, image, summary, "Why not Lisbon?", config=make_config()))
    text = backend.requests[0].messages[0].text
    assert "hints, applied as constraints: in Peru (2 candidates outside them set aside)" in text
    assert "Your earlier answers (reused: they fit the hints)" in text
    assert "38.7000" not in text  # a rejected candidate is not offered as one considered


def test_followup_quotes_calibrated_levels_status_clusters_and_abstentions(doubles, image, make_config) -> None:
    levels = LevelConfidence(country=0.81, region=0.42, city=0.2, within_25km=0.18, within_200km=0.55,
                             calibration="default@abc")
    lima = ClusterEvidence(
        lat=-12.05, lon=-77.04, area_km2=1000.0, log_mass=-2.0, posterior=0.71, place=Place(country="Peru"),
        sources=[SourceEvidence(source="gallery", items=4, mass=0.9, log_density=-3.0, weight=1.0),
                 SourceEvidence(source="vlm-zero-shot", items=0, mass=0.0, log_density=-6.0, weight=1.0)],
    )
    quito = ClusterEvidence(
        lat=-0.18, lon=-78.47, area_km2=1000.0, log_mass=-2.5, posterior=0.2,
        sources=[SourceEvidence(source="geoclip", items=3, mass=0.35, log_density=-4.0, weight=1.0)],
    )
    evidence = FusionEvidence(cluster_radius_km=25.0, allowed_area_km2=5.1e8, clusters=[lima, quito],
                              elsewhere_log_mass=-3.0, elsewhere_posterior=0.09, calibration="default@abc")
    prediction = Prediction(image=ImageRef(path="photo.jpg"), lat=-12.05, lon=-77.04, confidence=0.18,
                            levels=levels, evidence=evidence, missing_stages=["vlm"], sources_used=["gallery"])
    assert prediction.degraded
    abstention = Abstention(variant="neighbors-0", template_id="geo_reasoning", template_hash="h", model="m",
                            reason="only a blue sky is visible", raw_text="{}")
    summary = RunSummary(prediction=prediction, abstentions=[abstention])
    backend = doubles.ScriptedBackend([["Because of the gallery."]])
    _run(answer_followup(backend, image, summary, "How sure are you?", config=make_config()))
    text = backend.requests[0].messages[0].text
    assert f"Calibrated probabilities that it is right: {levels.summary()}" in text
    assert "Degraded: answered without vlm" in text
    assert "-12.0500, -77.0400 (Peru): 0.71 of the evidence; gallery 0.90 (4 items)" in text
    assert "vlm-zero-shot" not in text  # a source with nothing there is not listed
    assert "-0.1800, -78.4700: 0.20 of the evidence; geoclip 0.35 (3 items)" in text
    assert "Answers that said they cannot tell (1): only a blue sky is visible" in text
    assert load_template("chat_followup").version == "4"
