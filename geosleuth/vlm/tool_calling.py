"""Tool calls from any backend: natively (OpenAI tools API) or as constrained JSON actions.

A backend with ``native_tool_calls = True`` (the OpenAI-compatible one) takes ``VLMRequest.tools``
as they are and returns ``VLMReply.tool_calls``. Every other backend (the in-process transformers
and vLLM engines) is asked for one *action* instead: a JSON object held to the action schema
(``anyOf`` over ``{"tool": <const name>, "arguments": <that tool's schema>}``) by the same
constrained decoding its answers use, which :func:`parse_action` turns into a :class:`ToolCall`.
The conversation is the same for both: earlier calls and their results become plain text turns for
backends without native tool messages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from geosleuth.vlm.backends import ChatMessage, ToolCall, ToolSpec, VLMBackend, VLMReply, VLMRequest, as_replies

ACTION_SCHEMA_NAME = "action"


def supports_native_tools(backend: VLMBackend) -> bool:
    """True when ``backend`` sends tools to its server itself (OpenAI tools API)."""
    return bool(getattr(backend, "native_tool_calls", False))


def action_schema(tools: Sequence[ToolSpec], tool_choice: str = "auto") -> dict[str, Any]:
    """The JSON schema of one action: which tool, with arguments valid for that tool.

    ``tool_choice`` naming a tool narrows the schema to that tool ("auto"/"required": any tool; an
    action is always a call, so "required" adds nothing here)."""
    chosen = [t for t in tools if t.name == tool_choice] or list(tools)
    if not chosen:
        raise ValueError("an action schema needs at least one tool")
    definitions: dict[str, Any] = {}
    options = []
    for tool in chosen:
        parameters = dict(tool.parameters)
        # "#/$defs/..." references point at the document's root: the definitions move there.
        for name, definition in parameters.pop("$defs", {}).items():
            if definitions.setdefault(name, definition) != definition:
                raise ValueError(f"two tools define {name!r} differently; rename one of the argument models")
        options.append({
            "type": "object",
            "properties": {"tool": {"const": tool.name}, "arguments": parameters},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        })
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": definitions} if definitions else schema


def parse_action(text: str, *, call_id: str = "") -> ToolCall:
    """The tool call an action reply asks for; ``arguments`` None when the text is not an action
    (the loop reports that to the model as a failed call)."""
    try:
        value = json.loads(text, strict=False)  # xgrammar may emit raw control characters inside strings
    except json.JSONDecodeError:
        return ToolCall(name="", arguments=None, raw=text, id=call_id)
    if not isinstance(value, dict) or not isinstance(value.get("tool"), str):
        return ToolCall(name="", arguments=None, raw=text, id=call_id)
    arguments = value.get("arguments")
    return ToolCall(
        name=value["tool"], arguments=arguments if isinstance(arguments, dict) else None, raw=text, id=call_id
    )


def as_text_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The conversation for a backend without tool messages: an assistant turn that called tools
    shows its actions as JSON, a tool result becomes a user turn saying which call it answers."""
    out: list[ChatMessage] = []
    for message in messages:
        if message.role == "tool":
            out.append(ChatMessage("user", f"Result of your last call:\n{message.text}", list(message.images)))
        elif message.tool_calls:
            actions = [call.raw or json.dumps({"tool": call.name, "arguments": call.arguments}) for call in
                       message.tool_calls]
            out.append(ChatMessage("assistant", "\n".join(actions)))
        else:
            out.append(message)
    return out


async def generate_tool_calls(backend: VLMBackend, request: VLMRequest) -> list[VLMReply]:
    """Replies to ``request`` (which has ``tools``), each with the calls the model asked for."""
    if not request.tools:
        raise ValueError("generate_tool_calls needs a request with tools")
    if supports_native_tools(backend):
        return as_replies(await backend.generate(request))
    constrained = replace(
        request,
        messages=as_text_messages(request.messages),
        tools=None,
        json_schema=action_schema(request.tools, request.tool_choice),
        schema_name=ACTION_SCHEMA_NAME,
    )
    replies = as_replies(await backend.generate(constrained))
    return [replace(reply, tool_calls=(parse_action(reply.text),)) for reply in replies]
