"""Chat sessions: follow-up questions, hints that re-run the pipeline, persistence across processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from geosleuth.agent.chat import PlaceResolver, parse_hint
from geosleuth.api import Geolocator
from geosleuth.errors import GeosleuthError
from geosleuth.geo import haversine_km


@pytest.fixture(scope="module")
def resolver() -> PlaceResolver:
    from geosleuth.geo import ReverseGeocoder

    return PlaceResolver(ReverseGeocoder())


@pytest.mark.parametrize(
    ("message", "kind", "expected"),
    [
        ("it is in South America", "continent", "South America"),
        ("It's in Spain.", "country", "ES"),
        ("hint: the photo was taken in the Netherlands", "country", "NL"),
        ("Japan", "country", "JP"),
        ("europe", "continent", "Europe"),
        ("somewhere in Côte d'Ivoire", "country", "CI"),
    ],
)
def test_area_hints(resolver: PlaceResolver, message: str, kind: str, expected: str) -> None:
    hint = parse_hint(message, resolver)
    assert hint.kind == "constraint" and hint.constraint is not None and hint.constraint.kind == kind
    assert (hint.constraint.continent if kind == "continent" else hint.constraint.country_code) == expected


@pytest.mark.parametrize(
    ("message", "lat", "lon", "radius"),
    [
        ("within 50 km of Porto", 41.15, -8.61, 50.0),
        ("it's within 20 miles of Lima, Peru", -12.04, -77.03, 32.18688),
        ("near Nairobi", -1.28, 36.82, 50.0),
        ("it's in Porto", 41.15, -8.61, 50.0),
    ],
)
def test_circle_hints(resolver: PlaceResolver, message: str, lat: float, lon: float, radius: float) -> None:
    hint = parse_hint(message, resolver)
    assert hint.kind == "constraint" and hint.constraint is not None and hint.constraint.kind == "circle"
    assert float(haversine_km(hint.constraint.lat, hint.constraint.lon, lat, lon)) < 15
    assert hint.constraint.radius_km == pytest.approx(radius)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Why do you think it's in Spain?", "question"),
        ("tell us more about the road markings", "question"),  # "us" is not the United States
        ("what makes you sure", "question"),
        ("it's in Blorptania", "unknown-place"),
        ("within 10 km of Qwertyville", "unknown-place"),
        ("forget the hints", "clear"),
    ],
)
def test_questions_and_other_messages(resolver: PlaceResolver, message: str, kind: str) -> None:
    assert parse_hint(message, resolver).kind == kind


def test_hints_combine_areas_replace_areas() -> None:
    from geosleuth.agent.chat import merge_constraints
    from geosleuth.constraints import Constraint

    europe, spain = Constraint.in_continent("Europe"), Constraint.in_country("ES", "Spain")
    madrid = Constraint.within(40.4, -3.7, 50, "Madrid")
    assert merge_constraints([europe], spain) == [spain]
    assert merge_constraints([spain], madrid) == [spain, madrid]
    assert merge_constraints([spain, madrid], Constraint.in_country("PT")) == [madrid, Constraint.in_country("PT")]


def lisbon_vlm(doubles: Any) -> Any:
    return doubles.ScriptedVLM([
        doubles.answer(38.72, -9.14, country="Portugal", continent="Europe", clue="azulejo tiles"),
        doubles.answer(38.70, -9.20, country="Portugal", continent="Europe", clue="calcada pavement"),
    ])


def test_chat_answers_followups_takes_hints_and_resumes(make_resources: Any, photo: Path, tmp_path: Path,
                                                        doubles: Any) -> None:
    db = tmp_path / "sessions.sqlite"
    store = doubles.FixedStore(doubles.neighbors_around(doubles.LISBON, 5, prefix="lis"))
    vlm = lisbon_vlm(doubles)
    resources = make_resources(store=store, backend=vlm)

    async def first_process() -> str:
        async with Geolocator(resources.config, resources=resources) as geo:
            session = await geo.open_chat(photo, db_path=db)
            async with session:
                opening = await session.start()
                assert opening.kind == "located" and opening.prediction is not None
                assert opening.prediction.place is not None and opening.prediction.place.country_code == "PT"
                answer = await session.ask("Why Portugal?")
                assert answer.kind == "answer" and "Why Portugal?" in answer.text
                hinted = await session.ask("it's in Japan")
                assert hinted.kind == "relocated" and hinted.prediction is not None
                assert hinted.prediction.place is not None and hinted.prediction.place.country_code == "JP"
                assert [c.country_code for c in hinted.constraints] == ["JP"]
                assert "moved" in hinted.text
            return session.session_id

    session_id = asyncio.run(first_process())
    reasoning_requests = [r for r in vlm.requests if r.json_schema is not None]
    # None of the Lisbon answers lies in Japan, so the VLM was asked again under the hint.
    assert len(reasoning_requests) == 4

    async def second_process() -> None:
        async with Geolocator(resources.config, resources=resources) as geo:
            session = await geo.open_chat(session_id=session_id, db_path=db)
            async with session:
                resumed = await session.start()
                assert resumed.kind == "resumed" and session.resumed
                assert resumed.prediction is not None and resumed.prediction.place.country_code == "JP"
                history = await session.history()
                assert [t.kind for t in history] == ["located", "answer", "relocated"]
                assert history[1].user == "Why Portugal?"
                assert [c.country_code for c in await session.constraints()] == ["JP"]
                again = await session.ask("What about the tiles?")
                assert again.kind == "answer"

    asyncio.run(second_process())
    last = vlm.followups()[-1]
    texts = [m.text for m in last.messages]
    assert any("Why Portugal?" in t for t in texts), "the resumed session remembers the earlier question"
    assert last.messages[-1].text == "What about the tiles?"
    assert last.messages[0].images, "the image goes with the question"


def test_hint_that_fits_earlier_answers_reuses_them(make_resources: Any, photo: Path, tmp_path: Path,
                                                   doubles: Any) -> None:
    vlm = lisbon_vlm(doubles)
    resources = make_resources(backend=vlm)

    async def chat() -> Any:
        async with Geolocator(resources.config, resources=resources) as geo:
            session = await geo.open_chat(photo, db_path=tmp_path / "s.sqlite")
            async with session:
                await session.start()
                asked_before = len(vlm.requests)
                reply = await session.ask("it is in Europe")
                return reply, len(vlm.requests) - asked_before

    reply, new_requests = asyncio.run(chat())
    assert new_requests == 0
    assert reply.prediction is not None and reply.prediction.place.continent == "Europe"
    assert "vlm" in reply.prediction.sources_used


def test_unknown_place_and_no_vlm_replies(make_resources: Any, photo: Path, tmp_path: Path) -> None:
    resources = make_resources()  # vlm.backend = none

    async def chat() -> tuple[Any, Any, Any]:
        async with Geolocator(resources.config, resources=resources) as geo:
            session = await geo.open_chat(photo, db_path=tmp_path / "s.sqlite")
            async with session:
                await session.start()
                unknown = await session.ask("it's in Blorptania")
                question = await session.ask("why there?")
                return unknown, question, await session.constraints()

    unknown, question, constraints = asyncio.run(chat())
    assert unknown.kind == "not-understood" and "blorptania" in unknown.text.lower()
    assert constraints == []
    assert question.kind == "no-vlm" and "vlm.backend" in question.text


def test_resuming_an_unknown_session_fails_clearly(make_resources: Any, photo: Path, tmp_path: Path) -> None:
    resources = make_resources()

    async def resume() -> None:
        async with Geolocator(resources.config, resources=resources) as geo:
            await geo.open_chat(session_id="nope", db_path=tmp_path / "s.sqlite")

    with pytest.raises(GeosleuthError, match="no chat session 'nope'"):
        asyncio.run(resume())


def test_a_hint_reaches_the_vlm_and_followups_see_the_trace(make_resources: Any, photo: Path, tmp_path: Path,
                                                            doubles: Any) -> None:
    from geosleuth.types import Candidate

    vlm = lisbon_vlm(doubles)
    resources = make_resources(backend=vlm)

    async def chat() -> tuple[Any, Any, int]:
        async with Geolocator(resources.config, resources=resources) as geo:
            session = await geo.open_chat(photo, db_path=tmp_path / "s.sqlite")
            async with session:
                await session.start()
                opening_requests = len(vlm.requests)
                in_south_america = await session.ask("it is in South America")
                near_lima = await session.ask("within 50 km of Lima")
                await session.ask("Why not Portugal?")
                return in_south_america, near_lima, opening_requests

    in_south_america, near_lima, opening_requests = asyncio.run(chat())
    said = "it is in South America (constraint: continent South America)"
    opening = [r for r in vlm.requests[:opening_requests] if r.json_schema is not None]
    assert opening and not any("What the user told us" in r.messages[0].text for r in opening)
    # None of the Lisbon answers lies in South America: the VLM is asked again, and told the hint.
    hinted = [r for r in vlm.requests[opening_requests:] if r.json_schema is not None]
    assert hinted and all(said in r.messages[0].text for r in hinted)
    reasoning_records = [p for p in in_south_america.trace.prompts if p.template_id == "geo_reasoning"]
    assert reasoning_records and all(said in p.rendered for p in reasoning_records)
    # A second hint adds to the first: both are passed on, in the user's words.
    last_prompt = near_lima.trace.prompts[0].rendered
    assert said in last_prompt and "within 50 km of Lima" in last_prompt

    # The follow-up's context summarises the latest trace: the VLM's (rejected) Lisbon answers, which
    # no longer support the prediction, and the top-ranked candidate with its score.
    context = vlm.followups()[-1].messages[0].text
    assert "azulejo tiles" in context and "calcada pavement" in context
    verify_event = next(e for e in near_lima.trace.events if e.step == "verify")
    top = Candidate.model_validate(verify_event.outputs["candidates"][0])
    assert f"score {top.score:.2f}" in context
