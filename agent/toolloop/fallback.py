"""``agent.mode = tools`` on a server that cannot call tools: found once, then the fixed pipeline.

vLLM answers a request with tools with HTTP 400 unless it was started with
``--enable-auto-tool-choice --tool-call-parser`` (``geosleuth vlm serve`` adds them). The preflight
sends one small tool request (:func:`probe_tool_support`); a refusal sets
``Resources.tools_fallback`` and every photo of the run uses the fixed pipeline, with
:func:`fallback_note` in its failures, the trace and the CLI's warning. A run without a preflight
finds out at its first photo, the same way.
"""

from __future__ import annotations

from geosleuth.vlm.backends import (
    ChatMessage,
    ToolSpec,
    ToolsUnsupportedError,
    VLMBackend,
    VLMRequest,
    VLMRequestError,
)
from geosleuth.vlm.tool_calling import supports_native_tools


def fallback_note(reason: str | None) -> str:
    """What every answer of a fallen-back run says."""
    return f"agent.mode=tools fell back to the fixed pipeline: the VLM server cannot call tools ({reason})"


_PROBE_TOOL = ToolSpec(
    name="probe", description="check that tool calling works",
    parameters={"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                "additionalProperties": False},
)


async def probe_tool_support(backend: VLMBackend) -> str | None:
    """None when ``backend`` can call tools; otherwise why not (one small real request to a server;
    in-process backends always can: they decode actions under a grammar)."""
    if not supports_native_tools(backend):
        return None
    request = VLMRequest(
        messages=[ChatMessage("user", "Call the probe tool.")], n=1, temperature=0.0, max_tokens=16,
        tools=[_PROBE_TOOL], tool_choice="required",
    )
    try:
        await backend.generate(request)
    except ToolsUnsupportedError as exc:
        return str(exc)
    except VLMRequestError as exc:  # the server answered the preflight, but not a tool call
        return f"a test tool call failed: {exc}"
    return None
