"""The tools a VLM may call in ``agent.mode = tools``: one registered, typed function per tool.

The contract between the tools and the loop that calls them (``geosleuth.agent.toolloop``):

- a :class:`Tool` has a name, a one-line description for the model, and a pydantic model of its
  arguments; the JSON schema the model is shown is that model's schema, and the same model validates
  what the model sent (one schema both asks and checks, as ``prompts/schema.py`` does for answers);
- :meth:`Tool.run` takes the validated arguments and the photo's :class:`ToolContext` and returns a
  :class:`ToolObservation`: a short text the model reads next, JSON-able data for the trace, any
  candidate locations the call proposes (the fusion judges them like every other candidate), any
  pictures the model should look at next (``zoom``), and, for ``submit`` only, the final answer;
- a call that cannot be done (bad arguments, an unknown tool, a box outside the photo, an index that
  is not configured) raises :class:`ToolError`, whose message the loop hands to the model as the
  observation: a failed call is never a crash.

Tools run synchronously in a worker thread (the loop wraps them in ``asyncio.to_thread``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from geosleuth.errors import GeosleuthError

if TYPE_CHECKING:
    from PIL import Image

    from geosleuth.agent.answers import AnswerOrigin
    from geosleuth.agent.runtime import Resources
    from geosleuth.constraints import Constraint
    from geosleuth.index.encoders import ImageEmbeddings
    from geosleuth.types import Abstention, Candidate, Hypothesis, RetrievalResult, TextEvidence


class ToolError(GeosleuthError):
    """This call could not be done; the message is what the model is told (say what to do instead)."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool may look at for one photo: the photo, what perceive and retrieve found, and the
    run's once-loaded resources (encoders, galleries, geocoder, text tools, configuration).

    The loop keeps it current with :func:`dataclasses.replace`: ``candidates`` are those earlier
    calls proposed (``score_location`` judges a point together with them; ``submit`` counts them as
    coordinates the model was shown, for echo detection), ``hypotheses`` any VLM answers so far.
    """

    image: Image.Image  # as perceive loaded it (downscaled to vlm.max_image_pixels)
    embeddings: ImageEmbeddings
    retrieval: RetrievalResult
    resources: Resources
    text: TextEvidence | None = None
    constraints: tuple[Constraint, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    hypotheses: tuple[Hypothesis, ...] = ()
    # Gallery images the gallery search must never return (eval: the query photo itself and its author).
    exclude_ids: tuple[str, ...] = ()
    exclude_authors: tuple[str, ...] = ()
    # The loop's prompt template and model, recorded on the submitted answer (None: "tool_loop", no hash).
    origin: AnswerOrigin | None = None
    # The photo's file: zoom and read_text then crop the full-resolution original (None: crop ``image``).
    image_path: str | None = None


@dataclass(frozen=True)
class ToolObservation:
    """The result of one successful call."""

    text: str  # what the model reads next: short and bounded
    data: dict[str, Any] = field(default_factory=dict)  # JSON-able; recorded in the trace
    candidates: tuple[Candidate, ...] = ()  # locations this call proposes; the fusion judges them
    images: tuple[Image.Image, ...] = ()  # pictures the model sees next (zoom)
    answer: Hypothesis | Abstention | None = None  # submit only: the model's final answer


class Tool:
    """One tool. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    description: ClassVar[str]
    arguments: ClassVar[type[BaseModel]]

    def run(self, args: BaseModel, context: ToolContext) -> ToolObservation:  # pragma: no cover - abstract
        raise NotImplementedError

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema of this tool's arguments (shown to the model)."""
        return self.arguments.model_json_schema()


class ToolRegistry:
    """The tools one run offers, by name."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError(f"there is no tool {name!r}; the tools are {', '.join(self._tools)}") from None

    def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolObservation:
        """Validate ``arguments`` against the tool's schema and run it (ToolError when either fails)."""
        tool = self.get(name)
        try:
            args = tool.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            raise ToolError(f"{name}: invalid arguments ({problems})") from None
        return tool.run(args, context)
