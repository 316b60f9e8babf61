"""The answer schema (one definition: asked for and validated) and the versioned prompt templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geosleuth.prompts.render import PromptTemplateError, load_template, render
from geosleuth.prompts.schema import AnswerParseError, GeoAnswer, answer_json_schema, answer_skeleton, parse_answer


def _objects(node):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _objects(item)


def test_schema_is_strict_mode_compatible() -> None:
    schema = answer_json_schema()
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text  # inlined: some servers do not resolve refs
    objects = list(_objects(schema))
    assert len(objects) == 4  # an answer or an abstention, each with its clue object
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])
    answer, abstention = schema["anyOf"]
    for variant in (answer, abstention):
        assert list(variant["properties"]) == [
            "clues", "continent", "country", "region", "city", "latitude", "longitude", "confidence",
            "cannot_tell_because",
        ]  # reasoning order: clues before the coordinate
    props = answer["properties"]
    # An answer has both coordinates and no reason; an abstention neither coordinate and a reason:
    # constrained decoding can write nothing in between (a latitude with a null longitude).
    assert (props["latitude"]["minimum"], props["latitude"]["maximum"]) == (-90, 90)
    assert (props["longitude"]["minimum"], props["longitude"]["maximum"]) == (-180, 180)
    assert props["cannot_tell_because"] == {"type": "null"}
    held = abstention["properties"]
    assert held["latitude"] == held["longitude"] == {"type": "null"}
    assert held["cannot_tell_because"]["type"] == "string" and held["cannot_tell_because"]["minLength"] == 1
    assert (props["confidence"]["minimum"], props["confidence"]["maximum"]) == (0, 1)


def test_skeleton_names_every_field_of_the_schema() -> None:
    skeleton = answer_skeleton()
    for name in [*GeoAnswer.model_fields, "observation", "implication"]:
        assert f'"{name}"' in skeleton


VALID = {
    "clues": [{"observation": "kanji on signs", "implication": "Japan"}],
    "continent": "Asia",
    "country": "Japan",
    "region": "Tokyo",
    "city": None,
    "latitude": 35.68,
    "longitude": 139.76,
    "confidence": 0.7,
}


def test_valid_json_parses() -> None:
    answer = parse_answer(json.dumps(VALID))
    assert (answer.latitude, answer.longitude, answer.city) == (35.68, 139.76, None)
    assert answer.clues[0].implication == "Japan"


@pytest.mark.parametrize(
    "wrap",
    ["```json\n{}\n```", "```\n{}\n```", "Here you go:\n```json\n{}\n```\n", "  \n{}\n\n"],
)
def test_fenced_or_padded_json_parses(wrap: str) -> None:
    assert parse_answer(wrap.replace("{}", json.dumps(VALID))).country == "Japan"


def test_raw_control_characters_inside_strings_are_accepted() -> None:
    # vLLM's xgrammar can emit raw control characters inside strings (PLATFORM.md).
    text = json.dumps(VALID).replace("kanji on signs", "kanji\ton\x01signs")
    assert parse_answer(text).clues[0].observation == "kanji\ton\x01signs"


def test_over_long_text_and_extra_clues_are_clipped_not_rejected() -> None:
    data = dict(VALID, city="x" * 500, clues=[{"observation": "o" * 999, "implication": "i"}] * 20)
    answer = parse_answer(json.dumps(data))
    schema = answer_json_schema()["anyOf"][0]["properties"]
    assert len(answer.city or "") == schema["city"]["anyOf"][0]["maxLength"]
    assert len(answer.clues) == schema["clues"]["maxItems"]
    assert len(answer.clues[0].observation) == schema["clues"]["items"]["properties"]["observation"]["maxLength"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latitude": ...}, "latitude: missing"),
        ({"latitude": None}, "latitude"),
        ({"latitude": 123.0}, "latitude"),
        ({"longitude": -181}, "longitude"),
        ({"confidence": 85}, "confidence"),
        ({"clues": "none"}, "clues"),
    ],
)
def test_invalid_answers_are_rejected_with_the_field_named(change: dict, message: str) -> None:
    data = dict(VALID)
    for key, value in change.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(AnswerParseError, match=message):
        parse_answer(json.dumps(data))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The photo was taken in Paris at 48.85, 2.35.",  # prose: never scraped
        '{"latitude": 48.8, "longitude": 2.3',  # truncated
        "[1, 2]",
        json.dumps(VALID).replace("35.68", "NaN"),
    ],
)
def test_non_answers_are_rejected(text: str) -> None:
    with pytest.raises(AnswerParseError):
        parse_answer(text)


def test_shipped_templates_have_versions_and_hashes() -> None:
    for template_id in ("geo_reasoning", "answer_repair", "chat_followup"):
        template = load_template(template_id)
        assert template.id == template_id
        assert template.version
        assert len(template.sha256) == 64
        assert not template.text.startswith("---")


def test_hash_changes_with_any_edit(tmp_path: Path) -> None:
    path = tmp_path / "mine.md"
    path.write_text("---\nid: mine\nversion: 1\n---\nHello {{ name }}\n", encoding="utf-8")
    first = load_template(str(path))
    path.write_text("---\nid: mine\nversion: 1\n---\nHello, {{ name }}\n", encoding="utf-8")
    second = load_template(str(path))
    assert first.sha256 != second.sha256
    assert render(second, name="Ada") == "Hello, Ada"


def test_missing_variable_is_an_error_not_an_empty_string() -> None:
    template = load_template("answer_repair")
    with pytest.raises(PromptTemplateError, match="answer_format"):
        render(template, error="latitude: missing")


def test_unknown_template_lists_available_ones() -> None:
    with pytest.raises(PromptTemplateError, match="geo_reasoning"):
        load_template("no_such_template")


def test_front_matter_is_required_and_must_match_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "plain.md").write_text("no front matter\n", encoding="utf-8")
    with pytest.raises(PromptTemplateError, match="front matter"):
        load_template("plain", tmp_path)
    (tmp_path / "named.md").write_text("---\nid: other\nversion: 2\n---\nx\n", encoding="utf-8")
    with pytest.raises(PromptTemplateError, match="other"):
        load_template("named", tmp_path)


def test_a_null_coordinate_with_a_reason_is_an_abstention_not_a_point() -> None:
    answer = parse_answer(json.dumps({**VALID, "latitude": None, "longitude": None,
                                      "cannot_tell_because": "a plain white wall, nothing else"}))
    assert answer.abstains and answer.latitude is None and answer.longitude is None
    assert not parse_answer(json.dumps(VALID)).abstains


@pytest.mark.parametrize("change, message", [
    ({"latitude": None, "longitude": None}, "cannot_tell_because"),  # no reason given
    ({"latitude": None, "cannot_tell_because": "blurry"}, "both latitude and longitude"),
])
def test_half_an_abstention_is_invalid(change: dict, message: str) -> None:
    with pytest.raises(AnswerParseError, match=message):
        parse_answer(json.dumps({**VALID, **change}))
