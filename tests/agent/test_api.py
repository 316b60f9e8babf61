"""The public Python API: Geolocator."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from geosleuth.agent.runtime import Resources
from geosleuth.api import Geolocator, LocateRequest
from geosleuth.config import Config
from geosleuth.constraints import Constraint
from geosleuth.errors import ConfigError, GeosleuthError, ImageLoadError
from geosleuth.types import Prediction, Trace


class SlowVLM:
    """Counts how many requests are in flight at once (every answer: Lisbon)."""

    model_id = "slow-vlm"

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def generate(self, request: Any) -> list[str]:
        import json

        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            return [json.dumps(self.answer)] * request.n
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


def test_from_config_loads_models_once_on_first_use(base_config: Config, photo: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Config] = []
    real_load = Resources.load.__func__  # type: ignore[attr-defined]

    def counting_load(cls: type[Resources], config: Config) -> Resources:
        loads.append(config)
        return real_load(cls, config)

    monkeypatch.setattr(Resources, "load", classmethod(counting_load))
    geo = Geolocator.from_config(base_config, verify={"top_k": 2})
    assert loads == []  # nothing loads before the first call
    with geo:
        first = geo.locate(photo)
        second, trace = geo.locate_with_trace(photo)
    assert len(loads) == 1
    assert first.ok and len(first.alternatives) == 2
    assert second.lat == pytest.approx(first.lat) and trace.prediction == second
    assert trace.models["gps_gallery"].endswith("(2000 points)")


def test_overrides(base_config: Config) -> None:
    geo = Geolocator.from_config(base_config, vlm__backend="none", verify={"top_k": 3, "w_geoclip": 0.5})
    assert geo.config.vlm.backend == "none" and geo.config.verify.top_k == 3 and geo.config.verify.w_geoclip == 0.5
    with pytest.raises(ConfigError, match="unknown section 'vlms'"):
        Geolocator.from_config(base_config, vlms__backend="none")
    with pytest.raises(ConfigError, match="invalid configuration after override.*top_k"):
        Geolocator.from_config(base_config, verify__top_k=0)


def test_locate_with_constraint_and_top_k(make_resources: Any, photo: Path) -> None:
    resources = make_resources()
    with Geolocator(resources.config, resources=resources) as geo:
        prediction = geo.locate(photo, top_k=1, constraint=Constraint.in_country("BR", "Brazil"))
    assert prediction.place is not None and prediction.place.country_code == "BR"
    assert len(prediction.alternatives) == 1


def test_hint_is_shown_to_the_vlm_and_recorded_in_the_trace(make_resources: Any, photo: Path, doubles: Any) -> None:
    vlm = doubles.ScriptedVLM([doubles.answer(*doubles.LIMA, country="Peru", continent="South America")])
    resources = make_resources(backend=vlm)
    hint = "the photographer says it was taken on a trip to Peru"
    with Geolocator(resources.config, resources=resources) as geo:
        _, trace = geo.locate_with_trace(photo, hint=hint)
        asked_with_hint = len(vlm.requests)
        geo.locate(photo)
    hinted, plain = vlm.requests[:asked_with_hint], vlm.requests[asked_with_hint:]
    assert hinted and all(hint in r.messages[0].text for r in hinted)
    assert plain and not any(hint in r.messages[0].text for r in plain)
    assert all(hint in p.rendered for p in trace.prompts)
    assert next(e for e in trace.events if e.step == "reason").inputs["hint"] == hint


def test_parse_constraint_for_command_line_hints(geocoder: Any) -> None:
    from geosleuth.api import parse_constraint

    assert parse_constraint("South America", geocoder) == Constraint.in_continent("South America")
    assert parse_constraint("in Spain", geocoder).country_code == "ES"
    assert parse_constraint("within 50 km of Porto", geocoder).radius_km == 50
    with pytest.raises(GeosleuthError, match="(?i)'blorptania' is unknown"):
        parse_constraint("in Blorptania", geocoder)
    with pytest.raises(GeosleuthError, match="not a place hint"):
        parse_constraint("why?", geocoder)


def test_bad_image_raises_image_load_error_naming_it(make_resources: Any, tmp_path: Path) -> None:
    resources = make_resources()
    missing = tmp_path / "nowhere.jpg"
    with Geolocator(resources.config, resources=resources) as geo, pytest.raises(ImageLoadError) as info:
        geo.locate(missing)
    assert info.value.path == str(missing) and "does not exist" in str(info.value)


def test_sync_call_inside_an_event_loop_is_refused_with_advice(make_resources: Any, photo: Path) -> None:
    resources = make_resources()
    geo = Geolocator(resources.config, resources=resources)

    async def inside() -> Prediction:
        with pytest.raises(GeosleuthError, match="alocate"):
            geo.locate(photo)
        return await geo.alocate(photo)

    assert asyncio.run(inside()).ok
    geo.close()


def test_locate_many_streams_results_with_images_in_flight(make_resources: Any, photo: Path, tmp_path: Path,
                                                           doubles: Any) -> None:
    vlm = SlowVLM(doubles.answer(*doubles.LISBON, country="Portugal", continent="Europe"))
    resources = make_resources(backend=vlm)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"img{i}.jpg")
        shutil.copy(photo, paths[-1])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")

    async def collect(geo: Geolocator) -> list[tuple[str, Any]]:
        items: list[Any] = [*paths[:2], LocateRequest(str(bad)), *paths[2:]]
        return [item async for item in geo.locate_many(iter(items), concurrency=3)]

    geo = Geolocator(resources.config, resources=resources)
    results = asyncio.run(collect(geo))
    geo.close()
    assert sorted(path for path, _ in results) == sorted([*map(str, paths), str(bad)])
    outcomes = dict(results)
    assert isinstance(outcomes[str(bad)], ImageLoadError) and "empty" in str(outcomes[str(bad)])
    assert all(isinstance(outcomes[str(p)], Prediction) and outcomes[str(p)].ok for p in paths)
    assert vlm.max_in_flight > 1  # several images were being reasoned about at once
    assert vlm.closed


def test_locate_many_with_trace_and_early_stop(make_resources: Any, photo: Path) -> None:
    resources = make_resources()

    async def first_only(geo: Geolocator) -> tuple[str, Any]:
        async for item in geo.locate_many_with_trace([photo] * 4, concurrency=2):
            return item
        raise AssertionError("nothing was yielded")

    geo = Geolocator(resources.config, resources=resources)
    path, (prediction, trace) = asyncio.run(first_only(geo))
    assert path == str(photo) and isinstance(trace, Trace) and trace.prediction == prediction
    with pytest.raises(ConfigError, match="concurrency"):
        asyncio.run(first_only_bad(geo))
    geo.close()


async def first_only_bad(geo: Geolocator) -> None:
    async for _ in geo.locate_many([], concurrency=0):
        pass


def test_astream_yields_steps_then_done(make_resources: Any, photo: Path) -> None:
    resources = make_resources()

    async def steps(geo: Geolocator) -> list[str]:
        async with geo:
            return [step async for step, _ in geo.astream(photo)]

    assert asyncio.run(steps(Geolocator(resources.config, resources=resources))) == [
        "perceive", "retrieve", "reason", "verify", "decide", "done"
    ]


def test_close_releases_the_vlm_and_later_calls_fail_clearly(make_resources: Any, photo: Path, doubles: Any) -> None:
    vlm = doubles.ScriptedVLM([doubles.answer(*doubles.PARIS, country="France", continent="Europe")])
    resources = make_resources(backend=vlm)
    geo = Geolocator(resources.config, resources=resources)
    geo.locate(photo)
    geo.close()
    geo.close()  # idempotent
    assert vlm.closed
    with pytest.raises(GeosleuthError, match="closed"):
        geo.locate(photo)
