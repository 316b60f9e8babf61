"""`geosleuth trace show` / `trace html`: the chain of reasoning, readable and safely escaped."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from geosleuth.cli import app

runner = CliRunner()


def test_show_renders_the_tree_with_hypotheses_candidates_and_scores(trace_file: Path, hostile: str):
    result = runner.invoke(app, ["trace", "show", str(trace_file)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    for section in ("steps", "clues (1)", "hypotheses (2)", "candidates (2), ranked", "decision"):
        assert section in out
    assert "neighbors-5#0" in out and "Porto" in out and "Vigo" in out  # the hypotheses
    assert "0.812" in out and "0.654" in out and "0.731" in out  # component scores and total
    assert "geoclip" in out and "neighbor_support" in out
    assert "unusable VLM replies (1)" in out and "reply is not JSON" in out
    assert "EXIF GPS" in out and "km from the prediction" in out
    assert "[bold red]not markup[/]" in out  # model text is printed as text, not as rich markup
    flat = " ".join(out.split())
    assert "P country 0.93 · region 0.81 · city 0.66 · ≤25 km 0.64 · ≤200 km 0.88" in flat
    assert "clusters (1), heaviest first: evidence per source" in flat
    assert "0.625 (3)" in flat and "vlm-informed" in flat  # each source's mass (items) in the cluster


def test_show_picks_one_trace_of_a_jsonl_with_id(traces_jsonl: Path):
    result = runner.invoke(app, ["trace", "show", str(traces_jsonl)])
    assert result.exit_code == 2
    assert "--id" in result.output and "t-a" in result.output and "b.jpg" in result.output
    result = runner.invoke(app, ["trace", "show", str(traces_jsonl), "--id", "b.jpg"])
    assert result.exit_code == 0, result.output
    assert "t-b" in result.stdout and "t-a" not in result.stdout


def test_show_explains_when_given_a_batch_results_file(tmp_path: Path):
    results = tmp_path / "results.jsonl"
    results.write_text('{"id": "a.jpg", "path": "a.jpg", "prediction": {"image": {"path": "a.jpg"}}}\n')
    result = runner.invoke(app, ["trace", "show", str(results)])
    assert result.exit_code == 2
    assert "not a trace" in result.output and "--trace-dir" in result.output


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def test_html_page_is_self_contained_with_an_svg_map_and_escaped_text(trace_file: Path, tmp_path: Path,
                                                                       hostile: str):
    out = tmp_path / "pages"
    result = runner.invoke(app, ["trace", "html", str(trace_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    pages = list(out.glob("*.html"))
    assert [p.name for p in pages] == ["trace-1.html"]
    page = pages[0].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")

    parsed = _Collector()
    parsed.feed(page)
    assert "script" not in parsed.tags  # the model's <script> arrives as text only
    assert "link" not in parsed.tags and "img" not in parsed.tags and "iframe" not in parsed.tags
    srcs = [v for k, v in parsed.attrs if k in ("src", "href") and v]
    assert all(v.startswith("https://www.openstreetmap.org/") or v.startswith("#") for v in srcs)
    assert "url(" not in page and "@import" not in page
    text = "".join(parsed.text)
    assert hostile in text  # shown verbatim to the reader...
    assert "<script>" not in page  # ...because it was escaped

    # The maps: inline SVG, well-formed XML, with a graticule and the predicted point.
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 2  # world + zoom around the answer
    world = ET.fromstring(svgs[0])
    assert world.get("viewBox") == "0 0 720 360"
    ns = "{http://www.w3.org/2000/svg}"
    assert len(world.findall(f"{ns}line")) >= 12  # parallels and meridians every 30 degrees
    star = world.find(f"{ns}polygon[{ns}title]")
    assert star is not None
    # The prediction (41.15 N, 8.62 W) is drawn at x = (lon + 180) * 2, y = (90 - lat) * 2.
    xs = [float(p.split(",")[0]) for p in world.findall(f"{ns}polygon")[-1].get("points").split()]
    ys = [float(p.split(",")[1]) for p in world.findall(f"{ns}polygon")[-1].get("points").split()]
    assert abs(sum(xs) / len(xs) - (180 - 8.62) * 2) < 2 and abs(sum(ys) / len(ys) - (90 - 41.15) * 2) < 2
    # Land and borders from the geocoder's own boundary data, on both maps; the zoomed one around Porto
    # shows Portugal and Spain and not far-away countries.
    countries = [t.text for t in world.iter(f"{ns}title")]
    assert "Portugal" in countries and "Australia" in countries and len(countries) > 150
    zoom = ET.fromstring(svgs[1])
    zoomed = {t.text for t in zoom.find(f"{ns}g[@class='basemap']").iter(f"{ns}title")}
    assert {"Portugal", "Spain"} <= zoomed and "Australia" not in zoomed

    # Each cluster's evidence per source, and the calibrated per-level probabilities.
    assert "Clusters, heaviest first: evidence per source (1)" in text
    assert "vlm-informed: mass (items)" in text and "0.625 (3)" in text
    assert "calibration mine@0123456789ab" in text

    # The score table and the chain of reasoning.
    assert "neighbor_support" in text and "0.654" in text and "0.731" in text
    assert "Vigo" in text and "reply is not JSON" in text and "km from the prediction" in text


def test_html_writes_one_page_per_trace_of_a_jsonl_and_an_index(traces_jsonl: Path, tmp_path: Path):
    out = tmp_path / "pages"
    result = runner.invoke(app, ["trace", "html", str(traces_jsonl), "--out", str(out), "--no-land"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.html")) == ["b.jpg.html", "index.html", "t-a.html"]
    index = (out / "index.html").read_text()
    assert 'href="t-a.html"' in index and 'href="b.jpg.html"' in index



def test_a_trace_dir_from_batch_works_as_input(trace_dir: Path, tmp_path: Path):
    shown = runner.invoke(app, ["trace", "show", str(trace_dir), "--id", "t-b"])
    assert shown.exit_code == 0, shown.output
    assert "b.jpg" in shown.stdout
    result = runner.invoke(app, ["trace", "html", str(trace_dir), "--no-land"])
    assert result.exit_code == 0, result.output
    pages = trace_dir.with_name("traces-html")
    assert sorted(p.name for p in pages.glob("*.html")) == ["index.html", "t-a.html", "t-b.html"]


def test_parts_of_a_trace_that_do_not_validate_are_reported_not_dropped(trace_file: Path, tmp_path: Path):
    tree = json.loads(trace_file.read_text())
    reason = next(e for e in tree["events"] if e["step"] == "reason")
    reason["outputs"]["hypotheses"][1]["lat"] = 123.0  # out of range: this answer cannot be shown
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(tree))

    shown = runner.invoke(app, ["trace", "show", str(path)], env={"COLUMNS": "220"})
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "parts of this trace could not be read and are not shown (1)" in out
    assert "reason.hypotheses[1]" in out and "latitude 123.0 is outside [-90, 90]" in out
    assert "hypotheses (1)" in out and "Vigo" not in out.split("candidates (")[0]  # the rest is still shown

    pages = tmp_path / "pages"
    result = runner.invoke(app, ["trace", "html", str(path), "--out", str(pages), "--no-land"])
    assert result.exit_code == 0, result.output
    page = next(pages.glob("*.html")).read_text(encoding="utf-8")
    assert "Parts of this trace could not be read and are not shown (1)" in page
    assert "reason.hypotheses[1]" in page and "latitude 123.0 is outside [-90, 90]" in page


def test_a_degraded_answer_says_so_in_the_terminal_and_html_views(trace_file: Path, tmp_path: Path):
    from geosleuth.types import Prediction, Trace

    trace = Trace.model_validate_json(trace_file.read_text())
    assert trace.prediction is not None
    trace.prediction = Prediction.model_validate({**trace.prediction.model_dump(), "missing_stages": ["vlm"]})
    path = tmp_path / "degraded.json"
    path.write_text(trace.model_dump_json())
    shown = runner.invoke(app, ["trace", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "status degraded: answered without vlm" in shown.stdout
    pages = tmp_path / "pages"
    assert runner.invoke(app, ["trace", "html", str(path), "--out", str(pages)]).exit_code == 0
    assert "Status: degraded, answered without vlm" in next(pages.glob("*.html")).read_text()
