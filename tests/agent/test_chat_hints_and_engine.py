"""The chat flow under hints that contradict the VLM, follow-ups from the typed run summary, and the
session engine the web app uses (start / send / resume / list / history by session id)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from geosleuth.agent.chat import (
    ChatEngine,
    ChatSession,
    ChatTurnResult,
    SessionStore,
    answers_for_hints,
)
from geosleuth.agent.graph import LocatePipeline
from geosleuth.constraints import Constraint
from geosleuth.errors import GeosleuthError
from geosleuth.types import Hypothesis, ReasoningResult

MADRID = (40.4168, -3.7038)
PORTO = (41.1496, -8.6110)


def _hypothesis(lat: float, lon: float, index: int) -> Hypothesis:
    return Hypothesis(lat=lat, lon=lon, confidence=0.5, raw_text="{}", template_id="geo_reasoning",
                      template_hash="h", model="m", variant="neighbors-0", sample_index=index)


@pytest.mark.parametrize(
    ("inside", "outside", "reused"),
    [(0, 3, None), (1, 3, None), (1, 2, None), (2, 2, 2), (2, 1, 2), (3, 1, 3), (4, 0, 4), (0, 0, None)],
)
def test_earlier_answers_are_reused_only_when_most_fit_and_only_those_inside(
    geocoder: Any, doubles: Any, inside: int, outside: int, reused: int | None
) -> None:
    hypotheses = [_hypothesis(*doubles.LISBON, i) for i in range(inside)]
    hypotheses += [_hypothesis(*MADRID, inside + i) for i in range(outside)]
    plan = answers_for_hints(ReasoningResult(hypotheses=hypotheses), [Constraint.in_country("PT", "Portugal")],
                             geocoder)
    assert (plan.inside, plan.total) == (inside, inside + outside)
    if reused is None:
        assert plan.reuse is None  # most answers contradict the hint (or there are none): ask again
    else:
        assert plan.reuse is not None and len(plan.reuse.hypotheses) == reused
        assert {round(h.lat, 2) for h in plan.reuse.hypotheses} == {round(doubles.LISBON[0], 2)}


def test_without_hints_every_earlier_answer_is_reused(geocoder: Any, doubles: Any) -> None:
    prior = ReasoningResult(hypotheses=[_hypothesis(*doubles.LISBON, 0), _hypothesis(*MADRID, 1)])
    assert answers_for_hints(prior, [], geocoder).reuse == prior


def _vlm(doubles: Any, *places: tuple[float, float, str, str]) -> Any:
    return doubles.ScriptedVLM([
        doubles.answer(lat, lon, country=country, continent=continent, clue=f"clue {i}")
        for i, (lat, lon, country, continent) in enumerate(places)
    ])


def _chat(resources: Any, photo: Path, db: Path, messages: list[str]) -> list[ChatTurnResult]:
    async def run() -> list[ChatTurnResult]:
        pipeline = LocatePipeline(resources)
        async with await ChatSession.open(pipeline, image_path=str(photo), db_path=db) as session:
            replies = [await session.start()]
            for message in messages:
                replies.append(await session.ask(message))
            return replies

    return asyncio.run(run())


def test_a_hint_contradicting_most_answers_asks_the_vlm_again(make_resources: Any, photo: Path, tmp_path: Path,
                                                              doubles: Any) -> None:
    # Four answers per run (two variants x two samples): three in Portugal, one in Japan.
    vlm = _vlm(doubles, (*doubles.LISBON, "Portugal", "Europe"), (*PORTO, "Portugal", "Europe"),
               (*doubles.LISBON, "Portugal", "Europe"), (*doubles.TOKYO, "Japan", "Asia"))
    resources = make_resources(backend=vlm)
    opening, hinted, cleared = _chat(resources, photo, tmp_path / "s.sqlite", ["it's in Japan", "clear hints"])
    reasoning = [r for r in vlm.requests if r.json_schema is not None]
    first_run, asked_again, after_clearing = reasoning[:2], reasoning[2:4], reasoning[4:]
    assert len(first_run) == 2 and len(asked_again) == 2  # one answer in Japan did not stop the re-ask
    assert all("it's in Japan (constraint: country Japan (JP))" in r.messages[0].text for r in asked_again)
    note = "3 of 4 earlier VLM answers contradict the hints: asked the VLM again, with the hints"
    assert hinted.notes == [note] and f"({note})" in hinted.text
    assert hinted.summary is not None and not hinted.summary.reused_answers
    assert hinted.prediction is not None and hinted.prediction.place.country_code == "JP"
    assert opening.summary is not None and len(opening.summary.hypotheses) == 4
    # The answers given under "in Japan" are not reused once that hint is dropped: asked again, untold.
    assert len(after_clearing) == 2 and not any("What the user told us" in r.messages[0].text for r in after_clearing)
    assert cleared.notes == ["asked the VLM again: its earlier answers were given under hints now dropped "
                             "(in Japan)"]


def test_reused_answers_outside_a_hint_never_count_as_support(make_resources: Any, photo: Path, tmp_path: Path,
                                                              doubles: Any) -> None:
    vlm = _vlm(doubles, (*doubles.LISBON, "Portugal", "Europe"), (*PORTO, "Portugal", "Europe"),
               (*doubles.LISBON, "Portugal", "Europe"), (*MADRID, "Spain", "Europe"))
    resources = make_resources(backend=vlm)
    _, hinted, cleared = _chat(resources, photo, tmp_path / "s.sqlite", ["it's in Portugal", "clear hints"])
    assert len([r for r in vlm.requests if r.json_schema is not None]) == 2  # the opening run only
    assert hinted.notes == ["kept 3 of 4 earlier VLM answers: the others lie outside the hints"]
    assert cleared.notes == []  # without hints every earlier answer fits
    summary = hinted.summary
    assert summary is not None and summary.reused_answers and summary.constraints == ["in Portugal"]
    assert [h.country for h in summary.hypotheses] == ["Portugal"] * 3
    # The Madrid answer is neither a candidate nor support: it is not in the run at all.
    assert not [c for c in summary.candidates + summary.rejected
                if c.source.value == "vlm" and abs(c.lat - MADRID[0]) < 0.5]
    assert all(c.place is None or c.place.country_code == "PT" for c in summary.candidates)
    # Dropping the hints brings every earlier answer back (the full set was kept).
    assert cleared.summary is not None and len(cleared.summary.hypotheses) == 4 and not cleared.constraints


def test_followups_are_built_from_the_typed_summary_not_the_trace(make_resources: Any, photo: Path,
                                                                   tmp_path: Path, doubles: Any) -> None:
    vlm = _vlm(doubles, (*doubles.LISBON, "Portugal", "Europe"), (*PORTO, "Portugal", "Europe"))
    resources = make_resources(backend=vlm)

    async def run() -> tuple[ChatTurnResult, ChatTurnResult]:
        store = await SessionStore.open(tmp_path / "s.sqlite")
        try:
            session = await ChatSession.open(LocatePipeline(resources), image_path=str(photo), store=store)
            opening = await session.start()
            # The stored trace is gone (as if never kept): the follow-up does not need it.
            await store.graph.aupdate_state({"configurable": {"thread_id": session.session_id}}, {"trace": None})
            assert await session.trace() is None
            return opening, await session.ask("Why Portugal?")
        finally:
            await store.aclose()

    opening, answer = asyncio.run(run())
    assert answer.kind == "answer"
    context = vlm.followups()[-1].messages[0].text
    summary = opening.summary
    assert summary is not None and summary.candidates
    top = summary.candidates[0]
    assert f"score {top.score:.2f}" in context and f"{top.lat:.4f}, {top.lon:.4f}" in context
    assert "clue 0" in context and "clue 1" in context  # the VLM's answers, per variant
    assert "neighbors-0:" in context


def test_engine_starts_sends_lists_and_resumes_sessions_by_id(make_resources: Any, photo: Path, tmp_path: Path,
                                                              doubles: Any) -> None:
    vlm = _vlm(doubles, (*doubles.LISBON, "Portugal", "Europe"), (*PORTO, "Portugal", "Europe"))
    resources = make_resources(backend=vlm)
    db = tmp_path / "sessions.sqlite"
    other = tmp_path / "other.jpg"
    other.write_bytes(photo.read_bytes())

    async def first_process() -> tuple[str, str]:
        async with ChatEngine(resources, db) as engine:
            a, b = await asyncio.gather(engine.start(photo), engine.start(other))  # two sessions at once
            assert a.kind == b.kind == "located" and a.session_id != b.session_id
            json.dumps(a.model_dump(mode="json"))  # what a web server sends
            hinted = await engine.send(a.session_id, "it is in Europe")
            assert hinted.kind == "relocated" and [c.label for c in hinted.constraints] == ["in Europe"]
            answer = await engine.send(a.session_id, "why there?")
            assert answer.kind == "answer" and answer.session_id == a.session_id
            with pytest.raises(GeosleuthError, match="exists already"):
                await engine.start(photo, session_id=a.session_id)
            with pytest.raises(GeosleuthError, match="no chat session 'nope'"):
                await engine.send("nope", "hello?")
            return a.session_id, b.session_id

    first, second = asyncio.run(first_process())

    async def second_process() -> None:
        async with ChatEngine(resources, db) as engine:
            listed = await engine.list_sessions()
            assert [s.session_id for s in listed] == [first, second]  # most recently active first
            assert listed[0].turns == 3 and listed[0].constraints == ["in Europe"]
            assert listed[0].image_path == str(photo) and listed[1].turns == 1
            resumed = await engine.resume(first)
            assert resumed.kind == "resumed" and resumed.prediction is not None
            assert listed[0].answer == resumed.prediction.place.hierarchy()
            assert listed[0].answer.startswith("Europe > ")  # the latest answer, inside the hint
            assert [t.kind for t in await engine.history(first)] == ["located", "relocated", "answer"]
            assert [c.label for c in await engine.constraints(first)] == ["in Europe"]
            trace = await engine.trace(first)
            assert trace is not None and trace.prediction == resumed.prediction

    asyncio.run(second_process())


def test_engine_and_open_chat_share_sessions(make_resources: Any, photo: Path, tmp_path: Path, doubles: Any) -> None:
    from geosleuth.api import Geolocator

    resources = make_resources(backend=_vlm(doubles, (*doubles.LISBON, "Portugal", "Europe")))
    db = tmp_path / "s.sqlite"

    async def run() -> None:
        async with Geolocator(resources.config, resources=resources) as geo:
            async with await geo.open_chat_engine(db) as engine:
                started = await engine.start(photo)
            async with await geo.open_chat(session_id=started.session_id, db_path=db) as session:
                resumed = await session.start()
                assert resumed.kind == "resumed" and resumed.prediction == started.prediction

    asyncio.run(run())


def test_sessions_saved_before_the_index_existed_are_listed(make_resources: Any, photo: Path, tmp_path: Path) -> None:
    import sqlite3

    resources = make_resources()
    db = tmp_path / "s.sqlite"
    [opening] = _chat(resources, photo, db, [])
    with sqlite3.connect(db) as conn:  # as a file written before sessions were indexed
        conn.execute("DROP TABLE geosleuth_chat_sessions")

    async def listed() -> list[Any]:
        async with ChatEngine(resources, db) as engine:
            return await engine.list_sessions()

    [info] = asyncio.run(listed())
    assert info.session_id == opening.session_id and info.turns == 1 and info.image_path == str(photo)
    assert info.answer == opening.prediction.place.hierarchy()


def test_a_run_summary_holds_the_runs_reasoning_as_typed_objects(make_resources: Any, photo: Path,
                                                                  doubles: Any) -> None:
    vlm = _vlm(doubles, (*doubles.LISBON, "Portugal", "Europe"), (*MADRID, "Spain", "Europe"))
    outcome = asyncio.run(LocatePipeline(make_resources(backend=vlm)).run(
        str(photo), constraints=[Constraint.in_country("PT", "Portugal")]))
    summary = outcome.summary
    assert summary.prediction == outcome.prediction and not summary.reused_answers
    assert summary.constraints == ["in Portugal"]
    assert [h.country for h in summary.hypotheses] == ["Portugal", "Spain"] * 2  # as the VLM answered
    assert summary.candidates and all(c.place.country_code == "PT" for c in summary.candidates)
    verified = next(e for e in outcome.trace.events if e.step == "verify").outputs["candidates"]
    assert [c.model_dump(mode="json") for c in summary.candidates] == verified  # what the trace shows, typed


def test_every_locate_step_is_reported_as_it_finishes(make_resources: Any, photo: Path, tmp_path: Path,
                                                      doubles: Any) -> None:
    resources = make_resources(backend=_vlm(doubles, (*doubles.LISBON, "Portugal", "Europe")))
    steps: list[tuple[str, str | None]] = []

    async def on_step(step: str, event: Any) -> None:
        steps.append((step, event.step if event is not None else None))

    async def run() -> None:
        async with ChatEngine(resources, tmp_path / "s.sqlite") as engine:
            first = await engine.start(photo, on_step=on_step)
            assert [s for s, _ in steps] == ["perceive", "retrieve", "reason", "verify", "decide"]
            assert all(step == recorded for step, recorded in steps)  # each with its own trace event
            steps.clear()
            await engine.send(first.session_id, "it is in Europe", on_step=on_step)  # reuses earlier answers
            assert [s for s, _ in steps] == ["perceive", "retrieve", "reason", "verify", "decide"]
            steps.clear()
            await engine.send(first.session_id, "why?", on_step=on_step)  # a question locates nothing
            assert steps == []

    asyncio.run(run())
