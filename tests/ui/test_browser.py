"""`geosleuth ui` in headless Chromium: upload, the answer on the map, chat hints, sessions, bad files.

The models are tiny and random (their answers are nonsense), but the server, the pipeline, the chat
engine and its SQLite store, and the page are the real ones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from geosleuth.agent.graph import STEPS
from geosleuth.geo import haversine_km
from geosleuth.testing import photos

LIMA = (-12.0464, -77.0428)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui-photos")
    photos.write_jpeg_with_gps(root / "porto.jpg", 41.1496, -8.6110)
    photos.write_text_file(root / "notes.jpg")
    photos.write_empty_file(root / "empty.jpg")
    photos.write_png_header_claiming(root / "bomb.png", 100_000, 100_000)
    return root


@pytest.fixture(scope="module")
def started_over_http(ui_server, photo_dir: Path) -> list[tuple[str, dict]]:
    """The server-sent events of a session about porto.jpg started over HTTP (the browser upload has its
    own test), in the order they arrived."""
    request = urllib.request.Request(ui_server.url + "api/sessions?name=porto.jpg",
                                     data=(photo_dir / "porto.jpg").read_bytes(), method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = response.read().decode()
    return [(m[1], json.loads(m[2])) for m in re.finditer(r"event: (\w+)\ndata: (.*)\n\n", stream)]


@pytest.fixture(scope="module")
def session_id(started_over_http: list[tuple[str, dict]]) -> str:
    event, data = started_over_http[-1]
    assert event == "result", started_over_http
    return data["session"]["session_id"]


def test_steps_stream_live_and_as_they_finish_then_the_answer(started_over_http: list[tuple[str, dict]]):
    order = [(event, data["step"]) for event, data in started_over_http if event in ("progress", "step")]
    live = [data for event, data in started_over_http if event == "progress"]
    # each step is announced while it runs, then reported when it has finished, in pipeline order
    collapsed = [pair for i, pair in enumerate(order) if i == 0 or order[i - 1] != pair]  # one per run of tokens
    assert collapsed == [pair for step in STEPS for pair in (("progress", step), ("step", step))]
    assert all(d["state"] == "started" for d in live if d["step"] != "reason")
    # the VLM's tokens so far, its speed and at most how long it may take, while it decodes
    generating = [d for d in live if d["state"] == "generating"]
    assert generating and all(d["step"] == "reason" for d in generating)
    counts = [d["tokens"] for d in generating]
    assert counts == sorted(counts) and 0 < counts[-1] <= generating[-1]["token_budget"]
    speed = r"reason: \d+ tokens at [\d.]+ tokens/s, at most \d+ s left"
    assert any(re.fullmatch(speed, d["text"]) for d in generating)
    assert started_over_http[-1][0] == "result"
    steps = [data for event, data in started_over_http if event == "step"]
    assert [s["step"] for s in steps] == ["perceive", "retrieve", "reason", "verify", "decide"]
    assert all(s["duration_s"] >= 0 and s["error"] is None for s in steps)
    result = started_over_http[-1][1]
    assert result["kind"] == "located"
    assert [s["step"] for s in result["session"]["steps"]] == [s["step"] for s in steps]


def open_session(new_page, session_id: str):
    p = new_page()
    p.page.goto(f"{p.url}#session={session_id}")
    p.page.wait_for_selector("#answer:not([hidden])")
    return p


def shown_coordinate(page) -> tuple[float, float]:
    lat, lon = (float(v) for v in page.inner_text("#coordinate").split(","))
    return lat, lon


def test_upload_streams_steps_and_shows_the_answer_on_the_map(new_page, photo_dir: Path, screenshots: Path):
    p = new_page()
    page = p.page
    page.goto(p.url)
    page.set_input_files("#photo-input", str(photo_dir / "porto.jpg"))
    page.wait_for_selector("#answer:not([hidden])")

    # every step ran, in order, with its time
    steps = page.locator("#steps li")
    assert steps.evaluate_all("items => items.map(i => i.dataset.step)") == [
        "perceive", "retrieve", "reason", "verify", "decide"]
    for text in steps.all_inner_texts():
        assert re.search(r"\d+\.\d\d s", text), text
    # the VLM step keeps the count of tokens it streamed while it ran
    assert re.search(r"· \d+ tokens$", page.inner_text("#steps li[data-step=reason]"))

    # the answer: place, coordinate, status, EXIF GPS with its distance from the answer
    lat, lon = shown_coordinate(page)
    assert page.inner_text("#place").count(">") >= 1
    assert page.inner_text("#status") in ("ok", "degraded")
    exif = page.inner_text("#exif")
    expected_km = float(haversine_km(41.1496, -8.6110, lat, lon))
    shown_km = float(re.search(r"— ([\d.]+) km from the answer", exif).group(1))
    assert shown_km == pytest.approx(expected_km, rel=0.01, abs=1.0)  # geodesic vs haversine

    # the map: the offline basemap, one answer marker, one marker per alternative row, the EXIF point
    page.wait_for_selector("#map[data-basemap]")
    assert int(page.get_attribute("#map", "data-basemap")) > 100  # polygons drawn from boundary data
    rows = page.locator("#alternatives tbody tr")
    assert rows.count() >= 2
    assert page.locator("#map path.gs-layer-prediction").count() == 1
    assert page.locator("#map path.gs-layer-alternatives").count() == rows.count()
    assert page.locator("#map path.gs-layer-exif").count() == 1
    assert page.locator("#map path.gs-layer-gps").count() == 10  # retrieval.k_gps
    expect(page.locator("#text-summary")).to_have_text("not read (OCR is off: text.ocr)")  # the tiny config's
    first = rows.nth(0).locator("td").all_inner_texts()
    # the first alternative leads the winning cluster, whose (refined) centre is the answer
    assert first[0] == "1" and float(first[2]) == pytest.approx(lat, abs=0.25)

    # a layer can be switched off
    page.locator(".leaflet-control-layers-overlays label", has_text="GPS candidates").locator("input").uncheck()
    assert page.locator("#map path.gs-layer-gps").count() == 0

    page.screenshot(path=str(screenshots / "answer.png"), full_page=True)
    assert p.outside == []  # nothing loaded from the internet (OpenStreetMap tiles are off)

    # OpenStreetMap tiles only once the user turns them on (requests stopped here: no network in tests)
    page.route("https://tile.openstreetmap.org/**", lambda route: route.abort())
    with page.expect_request(lambda r: r.url.startswith("https://tile.openstreetmap.org/")):
        page.check("#osm-tiles")
    assert p.outside and all(url.startswith("https://tile.openstreetmap.org/") for url in p.outside)


def test_a_hint_moves_the_answer_inside_it_and_the_session_survives_a_reload(
    new_page, session_id: str, screenshots: Path
):
    p = open_session(new_page, session_id)
    page = p.page
    assert session_id in page.inner_text("#session-id")

    page.fill("#message", "within 300 km of Lima")
    page.click("#send")
    page.wait_for_selector("#history .turn-relocated")
    lat, lon = shown_coordinate(page)
    assert float(haversine_km(lat, lon, *LIMA)) <= 300.0
    # the re-locate's steps streamed in as they ran (a reopened session shows only names and times)
    assert page.inner_text("#steps li[data-step=decide]").endswith(f"— {lat:.4f}, {lon:.4f}")
    assert "Lima" in page.inner_text("#hints")
    assert page.locator("#map path.gs-layer-hints.gs-marker").count() == 1  # the hint's centre (and circle)
    page.screenshot(path=str(screenshots / "after-hint.png"), full_page=True)

    # reload: the same session comes back from the store, with its hint and its answer
    page.reload()
    page.wait_for_selector("#history .turn-relocated")
    assert shown_coordinate(page) == (lat, lon)
    assert "Lima" in page.inner_text("#hints")

    # and from a fresh page, through the session list, or by its id
    other = new_page().page
    other.goto(p.url)
    other.click(f'#sessions a[data-session="{session_id}"]')
    other.wait_for_selector("#history .turn-relocated")
    assert "within 300 km of Lima" in other.inner_text("#history")
    assert shown_coordinate(other) == (lat, lon)
    by_id = new_page().page
    by_id.goto(p.url)
    by_id.fill("#resume-id", "no-such-session")
    by_id.click("#resume-form button")
    expect(by_id.locator("#error")).to_contain_text("no chat session 'no-such-session'")
    by_id.fill("#resume-id", session_id)
    by_id.click("#resume-form button")
    by_id.wait_for_selector("#history .turn-relocated")
    assert shown_coordinate(by_id) == (lat, lon)
    assert p.outside == []


def test_bad_uploads_show_a_clear_message_and_the_session_goes_on(
    new_page, session_id: str, photo_dir: Path, screenshots: Path
):
    p = open_session(new_page, session_id)
    page = p.page
    before = page.inner_text("#coordinate")
    for name, message in [
        ("notes.jpg", "notes.jpg: not an image file Pillow can read (it looks like a text file)"),
        ("empty.jpg", "empty.jpg: the file is empty (0 bytes)"),
        ("bomb.png", "bomb.png: the image is too large to decode safely"),
    ]:
        page.set_input_files("#photo-input", str(photo_dir / name))
        expect(page.locator("#error")).to_contain_text(message)
        assert page.inner_text("#coordinate") == before  # the session shown is untouched
        if name == "notes.jpg":
            page.screenshot(path=str(screenshots / "bad-upload.png"), full_page=True)

    # the session goes on; and what the chat shows is text, never HTML (user's and model's alike)
    hostile = '<img src=x onerror="window.__owned=1"> why <b>here</b>?'
    page.fill("#message", hostile)
    page.click("#send")
    page.wait_for_selector("#history .turn-answer")  # the (tiny, random) VLM's answer
    assert page.is_hidden("#error")
    assert hostile in page.inner_text("#history")
    assert page.locator("#history img, #history b").count() == 0
    assert page.evaluate("window.__owned") is None


def test_trace_tab_and_downloads(new_page, session_id: str, screenshots: Path):
    p = open_session(new_page, session_id)
    page = p.page
    page.click("#tabs button[data-tab=trace]")
    frame = page.frame_locator("#trace-frame")
    expect(frame.locator("svg").first).to_be_visible()  # the trace page's map
    expect(frame.locator("body")).to_contain_text("decide")
    page.screenshot(path=str(screenshots / "trace.png"))

    trace = page.request.get(p.url + page.get_attribute("#download-trace", "href").lstrip("/"))
    prediction = page.request.get(p.url + page.get_attribute("#download-prediction", "href").lstrip("/"))
    assert "attachment" in trace.headers["content-disposition"]
    assert [e["step"] for e in trace.json()["events"]] == ["perceive", "retrieve", "reason", "verify", "decide"]
    lat, lon = shown_coordinate(page)
    assert prediction.json()["lat"] == pytest.approx(lat, abs=1e-4)
    levels = prediction.json()["levels"]  # the calibrated per-level probabilities, as the page shows them
    page.click("#tabs button[data-tab=photo]")
    shown = page.locator("#levels td[data-level]").all_inner_texts()
    assert shown == [f"{levels[k]:.2f}" for k in ("country", "region", "city", "within_25km", "within_200km")]
    assert levels["calibration"] in page.inner_text("#levels")
    assert page.locator("#more tr").count() == 0  # every prediction field has its place on the page


def test_batch_results_on_the_map_filtered_by_confidence_and_status(new_page, tmp_path: Path, screenshots: Path):
    from geosleuth.types import ImageRef, Place, Prediction, StepFailure

    def line(name: str, lat: float, lon: float, confidence: float, **extra) -> str:
        prediction = Prediction(image=ImageRef(path=name), lat=lat, lon=lon, confidence=confidence,
                                place=Place(country="Somewhere"), **extra)
        return json.dumps({"id": name, "path": name, "prediction": prediction.model_dump(mode="json")})

    results = tmp_path / "results.jsonl"
    results.write_text("\n".join([
        line("a.jpg", 48.85, 2.35, 0.9),
        line("b.jpg", -33.87, 151.21, 0.3),
        line("c.jpg", 35.68, 139.65, 0.7, failures=[StepFailure(step="reason", error="VLM down")],
             missing_stages=["vlm"]),
        json.dumps({"id": "d.jpg", "path": "d.jpg", "error": "cannot load image", "error_type": "ImageLoadError"}),
    ]) + "\n")
    p = new_page()
    page = p.page
    page.goto(p.url)
    page.click("#tabs button[data-tab=batch]")
    page.set_input_files("#batch-file", str(results))
    page.wait_for_selector("#batch-table tbody tr")
    assert page.locator("#batch-table tbody tr").count() == 4
    assert page.locator("#batch-map path.gs-marker").count() == 3  # the error row has no point

    page.locator("#batch-min-conf").fill("0.5")
    expect(page.locator("#batch-table tbody tr")).to_have_count(2)
    assert page.locator("#batch-map path.gs-marker").count() == 2
    page.locator('#batch-statuses input[data-status="degraded"]').uncheck()
    ids = page.locator("#batch-table tbody tr td:first-child").all_inner_texts()
    assert ids == ["a.jpg"]
    assert page.inner_text("#batch-count") == "1 of 4 shown"
    page.screenshot(path=str(screenshots / "batch.png"), full_page=True)

    broken = tmp_path / "not-results.jsonl"
    broken.write_text('{"hello": 1}\n')
    page.set_input_files("#batch-file", str(broken))
    expect(page.locator("#error")).to_contain_text("not-results.jsonl, line 1")



def test_a_session_from_the_web_app_resumes_in_the_terminal(ui_server, ui_config: Path, session_id: str):
    """`geosleuth chat --resume ID` (the real command, while the app runs) sees the browser's session."""
    result = subprocess.run(
        [*ui_server.command, "--config", str(ui_config), "chat", "--resume", session_id],
        input="/where\n", capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert re.search(rf"resumed session {session_id} \(\d+ earlier turns\)", result.stdout)
    assert "porto.jpg" in result.stdout or "Best guess" in result.stdout
