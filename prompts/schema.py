"""The answer schema, defined once: used to ask the VLM for JSON and to validate what comes back.

``GeoAnswer`` is the hierarchical answer (clues first, then continent > country > region > city,
then a coordinate and a confidence). :func:`answer_json_schema` turns it into a JSON schema that
strict structured-output servers accept (every object closed, every property required, refs
inlined); :func:`parse_answer` validates a raw reply against the same model.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_NAME = "geo_answer"
# Length bounds: enough for real answers, and they stop a weak model (or a random test model)
# from filling a string until max_tokens runs out under constrained decoding. They and the token
# budget are derived from each other (``answer_token_budget``): keep them small enough that the
# longest valid answer fits a CPU-friendly budget.
MAX_CLUES = 3
MAX_CLUE_CHARS = 90
MAX_NAME_CHARS = 40


def _clip_text(value: object, limit: int) -> object:
    """Over-long text (and extra clues) are clipped, not rejected: the bounds guide generation, and
    servers may count characters differently (broken UTF-8 decodes to extra replacement characters)."""
    return value[:limit] if isinstance(value, str) else value


class GeoClue(BaseModel):
    # extra="ignore": a reply with an extra key is still a usable answer (strict servers never add one).
    model_config = ConfigDict(extra="ignore")

    observation: str = Field(max_length=MAX_CLUE_CHARS, description="something visible in the photo")
    implication: str = Field(max_length=MAX_CLUE_CHARS, description="what it says about the location")

    @field_validator("observation", "implication", mode="before")
    @classmethod
    def _clip(cls, value: object) -> object:
        return _clip_text(value, MAX_CLUE_CHARS)


class GeoAnswer(BaseModel):
    """One answer from the VLM. Field order is the order of reasoning (clues before the coordinate)."""

    model_config = ConfigDict(extra="ignore")

    clues: list[GeoClue] = Field(max_length=MAX_CLUES, description="visible clues, most telling first")
    continent: str = Field(max_length=MAX_NAME_CHARS)
    country: str = Field(max_length=MAX_NAME_CHARS)
    region: str | None = Field(max_length=MAX_NAME_CHARS, description="state / province / region, null when unknown")
    city: str | None = Field(max_length=MAX_NAME_CHARS, description="city or nearest town, null when unknown")
    latitude: float | None = Field(ge=-90.0, le=90.0, allow_inf_nan=False, description="null when you cannot tell")
    longitude: float | None = Field(ge=-180.0, le=180.0, allow_inf_nan=False, description="null when you cannot tell")
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="0 = a guess, 1 = certain")
    cannot_tell_because: str | None = Field(
        None, max_length=MAX_CLUE_CHARS,
        description="why the place cannot be told (only with a null coordinate), else null",
    )

    @property
    def abstains(self) -> bool:
        """The model said it cannot tell: a null coordinate (recorded as an abstention, never a point)."""
        return self.latitude is None

    @field_validator("continent", "country", "region", "city", mode="before")
    @classmethod
    def _clip(cls, value: object) -> object:
        return _clip_text(value, MAX_NAME_CHARS)

    @field_validator("clues", mode="before")
    @classmethod
    def _first_clues(cls, value: object) -> object:
        return value[:MAX_CLUES] if isinstance(value, list) else value

    @field_validator("cannot_tell_because", mode="before")
    @classmethod
    def _clip_reason(cls, value: object) -> object:
        return _clip_text(value, MAX_CLUE_CHARS)

    @model_validator(mode="after")
    def _coordinate_or_reason(self) -> GeoAnswer:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither (null both when you cannot tell)")
        if self.latitude is None and not (self.cannot_tell_because or "").strip():
            raise ValueError("a null coordinate needs cannot_tell_because: say why the place cannot be told")
        if self.latitude is not None:
            self.cannot_tell_because = None  # a reason beside a coordinate is no abstention
        return self


class AnswerParseError(ValueError):
    """A reply is not a valid :class:`GeoAnswer`; the message says what is wrong, briefly."""


# Schema keywords pydantic emits that strict structured-output servers reject or do not need.
_DROPPED_KEYWORDS = ("title", "default")


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _inline_refs(copy.deepcopy(defs[name]), defs)
        return {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def _make_strict(node: Any) -> Any:
    """Close every object, require every property, drop titles/defaults (schema keywords only)."""
    if isinstance(node, list):
        return [_make_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "properties":
            # A mapping of property name -> schema: names are data, not keywords.
            out[key] = {name: _make_strict(sub) for name, sub in value.items()}
        else:
            out[key] = _make_strict(value)
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out


def _without_null(node: dict[str, Any]) -> dict[str, Any]:
    options = [option for option in node.get("anyOf", [node]) if option.get("type") != "null"]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _coordinate_or_reason(strict: dict[str, Any]) -> dict[str, Any]:
    """Two shapes, so that constrained decoding can only write what :class:`GeoAnswer` accepts: an
    answer (both coordinates, no reason) or an abstention (both null, a reason). One object with
    independently nullable fields let a random model write a latitude with a null longitude."""
    props = strict["properties"]
    answer = {**props, "latitude": _without_null(props["latitude"]), "longitude": _without_null(props["longitude"]),
              "cannot_tell_because": {"type": "null"}}
    reason = {**_without_null(props["cannot_tell_because"]), "minLength": 1}
    abstention = {**props, "latitude": {"type": "null"}, "longitude": {"type": "null"}, "cannot_tell_because": reason}
    return {"anyOf": [{**strict, "properties": answer}, {**strict, "properties": abstention}]}


def answer_json_schema() -> dict[str, Any]:
    """GeoAnswer as a strict JSON schema (a fresh dict on every call; callers may keep it): every object
    closed, every property required, and the coordinate-or-reason rule as two alternative objects."""
    raw = GeoAnswer.model_json_schema()
    raw.pop("description", None)  # the class docstring is for developers, not for the model
    return _coordinate_or_reason(_make_strict(_inline_refs(raw, raw.get("$defs", {}))))


def _skeleton(node: dict[str, Any]) -> str:
    if "anyOf" in node:
        return " or ".join(_skeleton(option) for option in node["anyOf"])
    kind = node.get("type")
    if kind == "object":
        fields = ", ".join(f'"{name}": {_skeleton(sub)}' for name, sub in node["properties"].items())
        return "{" + fields + "}"
    if kind == "array":
        return "[" + _skeleton(node["items"]) + ", ...]"
    if kind == "null":
        return "null"
    if kind in ("number", "integer"):
        low, high = node.get("minimum"), node.get("maximum")
        return f"<number {low:g} to {high:g}>" if low is not None and high is not None else "<number>"
    return f"<{kind}>"


def answer_skeleton() -> str:
    """A compact picture of the JSON answer, derived from the schema, for prompts: the answer's shape,
    then how an abstention differs from it."""
    answer, abstention = answer_json_schema()["anyOf"]
    differs = ", ".join(
        f'"{name}": {_skeleton(sub)}' for name, sub in abstention["properties"].items()
        if sub != answer["properties"][name]
    )
    return f"{_skeleton(answer)} -- or, when you cannot tell: the same with {differs}"


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL)


def _reject_constant(name: str) -> Any:
    raise AnswerParseError(f"the reply contains {name}, which is not a JSON number")


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "answer"
        if item["type"] == "missing":
            problems.append(f"{where}: missing")
        else:
            problems.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(problems)


def parse_answer(text: str) -> GeoAnswer:
    """Validate one raw reply. Raises AnswerParseError (short reason) when it is not a GeoAnswer.

    Accepts the bare JSON object or one fenced block (```json ... ```). Strings may contain raw
    control characters (vLLM's xgrammar emits them), so JSON is parsed with ``strict=False``.
    Nothing is scraped from prose: a reply that is not JSON is invalid.
    """
    body = text.strip()
    if not body:
        raise AnswerParseError("the reply is empty")
    fenced = _FENCE.findall(body)
    if len(fenced) == 1:
        body = fenced[0].strip()
    try:
        data = json.loads(body, strict=False, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise AnswerParseError(f"the reply is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise AnswerParseError(f"the reply is JSON but not an object (got {type(data).__name__})")
    try:
        return GeoAnswer.model_validate(data)
    except ValidationError as exc:
        raise AnswerParseError(_describe(exc)) from None


# ---------------------------------------------------------------------------------------------
# Token budget, derived from the schema's bounds

# JSON numbers have no length bound in a schema: a coordinate or confidence longer than this is
# assumed not to happen (a reply that does it anyway ends as a "cut off" failure, never silently).
ASSUMED_NUMBER_CHARS = 12
# Characters per token assumed for ordinary answer text with the BPE tokenizers of the default
# models (Qwen2 / LLaMA families: English prose averages about 4; numbers and JSON punctuation
# about 1-2). The budget is a cap, not a cost: constrained decoding stops at the schema's end.
CHARS_PER_TOKEN = 3.0
# The stop token and a few tokens of slack for tokenizer boundary effects.
BUDGET_MARGIN_TOKENS = 16


def _max_chars(node: dict[str, Any]) -> int:
    """Longest compact-JSON text (separators "," and ":") a value of ``node`` can have."""
    if "anyOf" in node:
        return max(_max_chars(option) for option in node["anyOf"])
    kind = node.get("type")
    if kind == "object":
        props = node["properties"]
        inner = sum(len(json.dumps(name)) + 1 + _max_chars(sub) for name, sub in props.items())
        return 2 + inner + max(len(props) - 1, 0)
    if kind == "array":
        if "maxItems" not in node:
            raise ValueError("every array in the answer schema needs maxItems, or no token budget can fit it")
        items = int(node["maxItems"])
        return 2 + items * _max_chars(node["items"]) + max(items - 1, 0)
    if kind == "string":
        if "maxLength" not in node:
            raise ValueError("every string in the answer schema needs maxLength, or no token budget can fit it")
        return 2 + int(node["maxLength"])
    if kind in ("number", "integer"):
        return ASSUMED_NUMBER_CHARS
    if kind == "boolean":
        return len("false")
    if kind == "null":
        return len("null")
    raise ValueError(f"the answer schema has a value of type {kind!r} that no token budget accounts for")


def answer_max_chars() -> int:
    """Characters of the longest valid answer, as constrained decoding writes it (no whitespace)."""
    return _max_chars(answer_json_schema())


def answer_token_budget(*, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """``max_tokens`` that fits the longest valid answer at ``chars_per_token`` (the CPU recipe's
    ``vlm.max_new_tokens``). A reply still cut off is recorded as such (``finish_reason == "length"``)."""
    if chars_per_token <= 0:
        raise ValueError(f"chars_per_token must be > 0, got {chars_per_token}")
    return math.ceil(answer_max_chars() / chars_per_token) + BUDGET_MARGIN_TOKENS
