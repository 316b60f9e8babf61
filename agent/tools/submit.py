"""The ``submit`` tool: the model's final answer, in the answer schema of ``prompts/schema.py``.

One schema both asks and validates: the model is shown :func:`~geosleuth.prompts.schema.answer_json_schema`
(an answer or an abstention), and :class:`~geosleuth.prompts.schema.GeoAnswer` checks what it sent. The
answer becomes a Hypothesis or an Abstention through :func:`geosleuth.agent.answers.answer_result`, the
same conversion the reason stage uses; coordinates earlier tool calls showed the model count as shown
(an answer that repeats one is marked an echo).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from geosleuth.agent.answers import AnswerOrigin, ShownCoordinate, answer_result
from geosleuth.agent.tools.registry import Tool, ToolContext, ToolObservation
from geosleuth.prompts.schema import GeoAnswer, answer_json_schema
from geosleuth.types import Abstention

# Recorded on an answer when the loop did not say which template it used.
DEFAULT_TEMPLATE_ID = "tool_loop"
TOOL_VARIANT = "tools"


class SubmitArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: GeoAnswer = Field(description="your final answer, or an abstention")


class SubmitTool(Tool):
    name = "submit"
    description = (
        "Give your final answer (ends the investigation): clues, continent, country, region, city, latitude, "
        "longitude, confidence; or null coordinates with cannot_tell_because when you cannot tell."
    )
    arguments = SubmitArguments

    def parameters_schema(self) -> dict[str, Any]:
        """``{"answer": <the strict answer schema>}``: an object at the top (as tool APIs require) holding
        the answer or abstention exactly as the reason stage asks for it."""
        return {"type": "object", "properties": {"answer": answer_json_schema()}, "required": ["answer"],
                "additionalProperties": False}

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:
        assert isinstance(args, SubmitArguments)
        answer = args.answer
        res = context.resources
        origin = context.origin or AnswerOrigin(
            template_id=DEFAULT_TEMPLATE_ID, template_hash="", variant=TOOL_VARIANT,
            model=res.backend.model_id if res.backend is not None else "none",
        )
        shown = [ShownCoordinate(f"tool candidate {c.source.value}:{c.source_ref}", c.lat, c.lon)
                 for c in context.candidates]
        raw = answer.model_dump_json()  # the answer as validated; the loop keeps the model's own replies
        result = answer_result(answer, raw, origin, res.geocoder, shown)
        if isinstance(result, Abstention):
            text = f"Submitted: cannot tell ({result.reason})."
        else:
            text = (f"Submitted: ({result.lat:.4f}, {result.lon:.4f}), {result.country or 'unknown country'}, "
                    f"confidence {result.confidence:.2f}.")
            if result.echo_of is not None:
                text += f" It repeats {result.echo_of}: not counted as independent evidence."
        return ToolObservation(text=text, data={"answer": answer.model_dump(mode="json")}, answer=result)
