"""The one interface every VLM backend implements and the request/reply types.

A backend turns a chat (text + images), an optional JSON schema, a sample count and a temperature
into raw replies (:class:`VLMReply`: the text and why generation stopped). It never parses or
repairs answers: that is the reason stage's job, the same for every backend. Backends are created
by name with :func:`geosleuth.vlm.registry.create_backend`.

Errors a backend raises:

- :class:`VLMRequestError` (and its subclasses): this request got no usable reply (server down
  after retries, timeouts, 5xx, a request the server refused). Other requests may still succeed;
  the reason stage records these as failures and the pipeline carries on.
- any other :class:`~geosleuth.errors.GeosleuthError` (``VLMError``, ``ModelNotAvailableError``,
  ``ConfigError``): a misconfiguration (model missing, wrong API key, unknown served model) that
  every request would hit, so it propagates.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from geosleuth.errors import VLMError

if TYPE_CHECKING:
    from PIL import Image

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "unknown"]
"""Why generation ended: ``stop`` = the model ended its answer (end-of-sequence or the schema was
complete), ``length`` = cut off at ``max_tokens`` (the text is incomplete), ``unknown`` = the backend
cannot tell."""


class VLMRequestError(VLMError):
    """One request got no usable reply; other requests may still work (recorded, not raised, by reason)."""


class VLMUnavailableError(VLMRequestError):
    """No reply after all attempts: connection refused, timeouts, or server errors (5xx)."""

    def __init__(self, message: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(message)


class VLMRejectedError(VLMRequestError):
    """The server refused this request (HTTP 4xx other than auth / unknown model), e.g. prompt too long."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class ToolsUnsupportedError(VLMRejectedError):
    """The server cannot call tools (vLLM started without ``--enable-auto-tool-choice --tool-call-parser``)."""


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, a one-line description and its arguments' JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for. ``arguments`` is None when the model's text was not a JSON
    object; ``raw`` is what the model sent either way (the loop tells the model what was wrong)."""

    name: str
    arguments: dict[str, Any] | None
    raw: str
    id: str = ""


@dataclass
class ChatMessage:
    role: Role
    text: str
    images: list[Image.Image] = field(default_factory=list)  # shown before the text
    tool_calls: list[ToolCall] = field(default_factory=list)  # an assistant turn that called tools
    tool_call_id: str | None = None  # a "tool" message: the call it answers


@dataclass
class VLMRequest:
    messages: list[ChatMessage]
    json_schema: dict[str, Any] | None = None  # force replies into this schema where the backend can
    n: int = 1  # samples wanted
    temperature: float = 0.7
    max_tokens: int = 768
    schema_name: str = "answer"  # the name a structured-output server is told
    # Tools the model may call instead of answering in text; ``tool_choice``: "auto" (the model
    # decides), "required" (it must call one) or a tool's name. Only backends with
    # ``native_tool_calls = True`` take these; ``geosleuth.vlm.tool_calling`` runs the others.
    tools: list[ToolSpec] | None = None
    tool_choice: str = "auto"
    # Called from the backend's worker with the tokens generated so far for this request (all its
    # samples); in-process backends call it as they decode, others may never call it.
    on_tokens: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a VLM request needs at least one message")
        if self.n < 1:
            raise ValueError(f"a VLM request needs n >= 1 samples (got {self.n})")
        if self.max_tokens < 1:
            raise ValueError(f"a VLM request needs max_tokens >= 1 (got {self.max_tokens})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (got {self.temperature})")
        if self.tools is not None and self.json_schema is not None:
            raise ValueError("a VLM request takes tools or a JSON schema, not both")


@dataclass(frozen=True)
class VLMReply:
    """One generated sample: the raw text and why generation stopped."""

    text: str
    finish_reason: FinishReason = "unknown"
    tokens: int | None = None  # tokens generated, where the backend knows
    tool_calls: tuple[ToolCall, ...] = ()  # calls the model asked for (requests with ``tools``)

    @property
    def cut_off(self) -> bool:
        """True when the token limit ended the reply, so the text is incomplete."""
        return self.finish_reason == "length"


def finish_reason_of(value: object) -> FinishReason:
    """A server's or engine's finish reason as ours: "stop" and "length" as they are, else unknown."""
    return value if value in ("stop", "length") else "unknown"  # type: ignore[return-value]


def as_replies(items: Sequence[VLMReply | str]) -> list[VLMReply]:
    """Replies from a backend's ``generate`` result; plain strings (a backend written against the
    older text-only protocol, or a test double) become replies whose finish reason is unknown."""
    return [item if isinstance(item, VLMReply) else VLMReply(str(item)) for item in items]


@runtime_checkable
class VLMBackend(Protocol):
    """Anything that answers VLM requests. ``model_id`` is recorded in every hypothesis and trace."""

    model_id: str

    async def generate(self, request: VLMRequest) -> list[VLMReply]:
        """``request.n`` replies (fewer only if the backend could not produce more)."""
        ...

    async def aclose(self) -> None:
        """Release connections / memory held by the backend."""
        ...


def downscale_image(image: Image.Image, max_pixels: int) -> Image.Image:
    """RGB copy of ``image`` with at most ``max_pixels`` pixels (aspect ratio kept; never upscaled)."""
    from PIL import Image as PILImage

    out = image.convert("RGB") if image.mode != "RGB" else image
    width, height = out.size
    if width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        out = out.resize(size, PILImage.Resampling.LANCZOS)
    return out


def image_data_url(image: Image.Image, *, quality: int = 90) -> str:
    """``data:image/jpeg;base64,...`` for an RGB image (JPEG: a tenth of PNG's size for photos)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
