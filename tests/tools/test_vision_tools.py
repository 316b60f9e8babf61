"""zoom and read_text on real pictures, with the real OCR models and gazetteer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from geosleuth.agent.tools.catalog import default_tools
from geosleuth.agent.tools.registry import ToolError
from geosleuth.agent.tools.text_evidence import read_text_evidence
from geosleuth.agent.verify import candidate_pool
from geosleuth.types import CandidateSource, RetrievalResult


def quadrants() -> Image.Image:
    """200x100: red top left, green top right, blue bottom left, white bottom right."""
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 100, 50))
    image.paste((0, 255, 0), (100, 0, 200, 50))
    image.paste((0, 0, 255), (0, 50, 100, 100))
    return image


def test_zoom_crops_the_box_and_enlarges_it_to_the_vlm_image_size(make_context) -> None:
    context = make_context(quadrants())  # vlm.max_image_pixels = 128 * 128
    observation = default_tools(context.resources).call(
        "zoom", {"box": {"x0": 0.5, "y0": 0.0, "x1": 1.0, "y1": 0.5}}, context
    )
    (crop,) = observation.images
    assert abs(crop.width * crop.height - 128 * 128) <= crop.width + crop.height  # up to the pixel budget
    assert abs(crop.width / crop.height - 2.0) < 0.03  # the 100x50 box keeps its shape
    pixels = np.asarray(crop)
    assert (pixels[..., 1] > 200).all() and (pixels[..., 0] < 50).all()  # only the green quarter
    assert "pixels (100, 0)-(200, 50)" in observation.text and "200x100" in observation.text
    assert observation.candidates == () and observation.answer is None


def test_zoom_crops_the_full_resolution_original_when_the_file_is_known(make_context, tmp_path) -> None:
    original = quadrants().resize((800, 400), Image.Resampling.NEAREST)
    original.paste((0, 0, 0), (600, 300, 602, 304))  # a 2x4 pixel mark in the white quarter
    original.save(tmp_path / "photo.png")
    downscaled = make_context(original.resize((200, 100), Image.Resampling.LANCZOS))
    context = dataclasses.replace(downscaled, image_path=str(tmp_path / "photo.png"))
    box = {"box": {"x0": 0.7, "y0": 0.7, "x1": 0.8, "y1": 0.8}}
    registry = default_tools(context.resources)
    observation = registry.call("zoom", box, context)
    assert "pixels (560, 280)-(640, 320) of the 800x400 photo" in observation.text
    assert np.asarray(observation.images[0]).min() < 30  # the mark is there, enlarged
    assert np.asarray(registry.call("zoom", box, downscaled).images[0]).min() > 60  # the copy blurred it to grey
    missing = dataclasses.replace(context, image_path=str(tmp_path / "gone.png"))
    with pytest.raises(ToolError, match="cannot reload the photo at full resolution.*gone.png"):
        registry.call("zoom", box, missing)


def test_zoom_rejects_an_empty_box_and_one_too_small_to_see(make_context) -> None:
    context = make_context(quadrants())
    registry = default_tools(context.resources)
    with pytest.raises(ToolError, match="zoom: invalid arguments.*empty box: need x0 < x1"):
        registry.call("zoom", {"box": {"x0": 0.5, "y0": 0.2, "x1": 0.5, "y1": 0.9}}, context)
    with pytest.raises(ToolError, match="only 2x5 pixels of the 200x100 photo"):
        registry.call("zoom", {"box": {"x0": 0.5, "y0": 0.5, "x1": 0.51, "y1": 0.55}}, context)
    with pytest.raises(ToolError, match="box.x1: Input should be less than or equal to 1"):
        registry.call("zoom", {"box": {"x0": 0.5, "y0": 0.5, "x1": 1.2, "y1": 0.9}}, context)


def test_read_text_in_a_box_reads_only_that_sign_and_proposes_its_place(make_context, text_tools,
                                                                        render_sign) -> None:
    image = render_sign("Lisboa", "Porto")  # 720x400, signs at y 40-130 and 150-240
    context = make_context(image, text_tools=text_tools)
    observation = default_tools(context.resources).call(
        "read_text", {"box": {"x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 0.35}}, context
    )
    lines = [r["text"] for r in observation.data["evidence"]["regions"]]
    assert lines == ["Lisboa"]
    assert '"Lisboa"' in observation.text and "Porto" not in observation.text
    lisbon = observation.candidates[0]
    assert lisbon.source is CandidateSource.OCR and lisbon.source_ref == "geonames-2267057"
    assert abs(lisbon.lat - 38.72) < 0.1 and abs(lisbon.lon + 9.13) < 0.1
    assert "Lisbon (PT" in observation.text


def test_read_text_of_the_whole_photo_gives_the_pipelines_text_candidates(make_context, text_tools,
                                                                          render_sign) -> None:
    image = render_sign("München Hbf", "Bahnhofstraße 5")
    context = make_context(image, text_tools=text_tools)
    observation = default_tools(context.resources).call("read_text", {}, context)
    pipeline = candidate_pool(RetrievalResult(), [], text=read_text_evidence(image, text_tools))
    assert [(c.source, c.source_ref, c.lat, c.lon) for c in observation.candidates] == [
        (c.source, c.source_ref, c.lat, c.lon) for c in pipeline
    ]
    assert observation.candidates and observation.candidates[0].source_ref == "geonames-2867714"  # Munich
    assert "Language guess: de" in observation.text
    # With perceive's reading in the context, the tool returns that reading instead of reading again.
    read_before = dataclasses.replace(context, text=read_text_evidence(render_sign("Lisboa"), text_tools))
    again = default_tools(context.resources).call("read_text", {}, read_before)
    assert [c.source_ref for c in again.candidates] == ["geonames-2267057"]


def test_read_text_without_a_place_or_without_text_proposes_nothing(make_context, text_tools, render_sign) -> None:
    context = make_context(render_sign("Xqvrtz Blomquaft"), text_tools=text_tools)
    observation = default_tools(context.resources).call("read_text", {}, context)
    assert observation.candidates == () and "No known place" in observation.text
    noise = Image.fromarray(np.random.default_rng(0).integers(90, 140, size=(120, 160, 3), dtype=np.uint8))
    blank = make_context(noise, text_tools=text_tools)
    observation = default_tools(blank.resources).call("read_text", {}, blank)
    assert observation.candidates == () and observation.text == "No readable text in the whole photo."


def test_read_text_with_ocr_off_says_how_to_turn_it_on(make_context, text_tools) -> None:
    from geosleuth.agent.tools.vision_tools import ReadTextTool

    context = make_context(quadrants(), text_tools=None)
    with pytest.raises(ToolError, match=r"OCR is off.*text\.ocr = true"):
        ReadTextTool().run(ReadTextTool.arguments(), context)
