"""The tools as the model sees them, and the loop's opening prompt (versioned template ``geo_tools``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geosleuth.agent.tools.submit import SubmitTool
from geosleuth.prompts.render import PromptTemplate, load_template, render
from geosleuth.vlm.backends import ChatMessage, ToolSpec

if TYPE_CHECKING:
    from PIL import Image

    from geosleuth.agent.toolloop.state import Budget
    from geosleuth.agent.tools.registry import ToolRegistry

TEMPLATE_ID = "geo_tools"
SUBMIT_TOOL = SubmitTool.name


def tool_specs(registry: ToolRegistry) -> list[ToolSpec]:
    """Every tool of ``registry`` as a function the model may call (name, description, arguments' schema)."""
    return [ToolSpec(name=t.name, description=t.description, parameters=t.parameters_schema()) for t in registry]


def opening_messages(
    template: PromptTemplate,
    image: Image.Image,
    specs: list[ToolSpec],
    budget: Budget,
    *,
    hint: str | None = None,
    action_format: bool = False,
) -> list[ChatMessage]:
    """The first turn: the photo, the task, the tools and the budget. ``action_format``: the model
    answers with JSON actions (in-process backends) rather than native tool calls."""
    text = render(
        template,
        tools=specs,
        max_tool_calls=budget.max_tool_calls,
        max_seconds=f"{budget.max_seconds:g}",
        hint=hint,
        action_format=action_format,
    )
    return [ChatMessage("user", text, [image])]


def load_loop_template() -> PromptTemplate:
    return load_template(TEMPLATE_ID)
