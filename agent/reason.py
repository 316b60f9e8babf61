"""The reason stage: ask the VLM where the photo was taken, several ways, and keep every answer honest.

One prompt per G3-style variant (the same question with 0 / 5 / 10 / 15 retrieved neighbours,
``config.prompts.neighbor_counts``, capped by what retrieval found; duplicates skipped), all
variants concurrently, ``config.vlm.samples_per_variant`` samples each. Every reply is validated
against :class:`~geosleuth.prompts.schema.GeoAnswer`; an invalid reply is re-asked once with the
validation error, and if that fails too it becomes a :class:`ReasoningFailure` with the raw text
kept. No coordinate is ever invented: missing or out-of-range coordinates are failures, and a reply
that says it cannot tell (a null coordinate with a reason) is an :class:`Abstention`, not a point.

Echoes: an answer whose coordinate lies within ``ECHO_RADIUS_KM`` of a coordinate its own prompt
showed (a gallery neighbour or GPS candidate) is marked ``Hypothesis.echo_of``: it may have copied
the hint rather than read the photo, so verification does not count it as independent evidence.
Each hypothesis records ``shown_coordinates`` (0 = a zero-shot answer).

A request the backend could not serve (server down after retries, refused request) becomes failure
records, so the pipeline can still answer from retrieval; a misconfiguration (model missing, bad
API key) raises.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from geosleuth.agent.answers import (  # noqa: F401 - ECHO_RADIUS_KM, echo_of: re-exported
    ECHO_RADIUS_KM,
    AnswerOrigin,
    ShownCoordinate,
    answer_result,
    echo_of,
)
from geosleuth.errors import ConfigError
from geosleuth.prompts.render import PromptTemplate, load_template, render
from geosleuth.prompts.schema import (
    SCHEMA_NAME,
    AnswerParseError,
    GeoAnswer,
    answer_json_schema,
    answer_skeleton,
    parse_answer,
)
from geosleuth.types import (
    Abstention,
    GalleryNeighbor,
    GPSCandidate,
    Hypothesis,
    Place,
    PromptRecord,
    ReasoningFailure,
    ReasoningResult,
    RetrievalResult,
)
from geosleuth.vlm.backends import ChatMessage, VLMBackend, VLMReply, VLMRequest, VLMRequestError, as_replies

if TYPE_CHECKING:
    from PIL import Image

    from geosleuth.config import Config
    from geosleuth.geo import ReverseGeocoder

REPAIR_TEMPLATE_ID = "answer_repair"
# A bad reply is quoted back in the repair turn; a runaway one is cut so the repair still fits.
MAX_ECHOED_REPLY_CHARS = 4000


@dataclass(frozen=True)
class PromptVariant:
    """How much retrieved context one prompt shows (the first ``n_*`` items of each list)."""

    name: str
    n_neighbors: int
    n_dissimilar: int
    n_gps: int


def plan_variants(
    retrieval: RetrievalResult, neighbor_counts: Sequence[int], *, include_dissimilar: bool
) -> list[PromptVariant]:
    """One variant per requested count, capped by what was retrieved; identical variants once.

    A count ``k`` shows up to ``k`` similar neighbours, ``k`` GPS-gallery candidates and (when
    ``include_dissimilar``) ``k`` dissimilar neighbours; its name is ``neighbors-<shown>``.
    """
    if not neighbor_counts:
        raise ConfigError("prompts.neighbor_counts is empty; give at least one count, e.g. [0, 5, 10, 15]")
    variants: list[PromptVariant] = []
    seen: set[tuple[int, int, int]] = set()
    for k in neighbor_counts:
        if k < 0:
            raise ConfigError(f"prompts.neighbor_counts has a negative count ({k}); counts are >= 0")
        shown = (
            min(k, len(retrieval.neighbors)),
            min(k, len(retrieval.dissimilar)) if include_dissimilar else 0,
            min(k, len(retrieval.gps_candidates)),
        )
        if shown in seen:
            continue
        seen.add(shown)
        variants.append(PromptVariant(f"neighbors-{max(shown[0], shown[2])}", *shown))
    return variants


def _place_labels(items: Sequence[GalleryNeighbor | GPSCandidate], geocoder: ReverseGeocoder) -> list[str]:
    """Each item's place hierarchy: its own ``place`` when retrieval set one, else reverse-geocoded."""
    known: list[Place | None] = [getattr(item, "place", None) for item in items]
    missing = [i for i, place in enumerate(known) if place is None]
    looked_up = geocoder.lookup_many([(items[i].lat, items[i].lon) for i in missing])
    for i, place in zip(missing, looked_up, strict=True):
        known[i] = place
    return [place.hierarchy() if place is not None else "unknown place" for place in known]


def _context_rows(items: Sequence[GalleryNeighbor | GPSCandidate], labels: list[str]) -> list[dict[str, Any]]:
    return [
        {"lat": item.lat, "lon": item.lon, "similarity": item.similarity, "place": label}
        for item, label in zip(items, labels, strict=True)
    ]


def _clean(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


def shown_coordinates(variant: PromptVariant, retrieval: RetrievalResult) -> list[ShownCoordinate]:
    """The coordinates a variant's prompt shows (similar and dissimilar neighbours, GPS candidates)."""
    shown = [ShownCoordinate(f"neighbor {i + 1}", n.lat, n.lon)
             for i, n in enumerate(retrieval.neighbors[: variant.n_neighbors])]
    shown += [ShownCoordinate(f"dissimilar neighbor {i + 1}", n.lat, n.lon)
              for i, n in enumerate(retrieval.dissimilar[: variant.n_dissimilar])]
    shown += [ShownCoordinate(f"gps candidate {i + 1}", g.lat, g.lon)
              for i, g in enumerate(retrieval.gps_candidates[: variant.n_gps])]
    return shown


@dataclass
class _Outcome:
    hypotheses: list[Hypothesis] = field(default_factory=list)
    abstentions: list[Abstention] = field(default_factory=list)
    failures: list[ReasoningFailure] = field(default_factory=list)
    prompts: list[PromptRecord] = field(default_factory=list)
    raw_replies: list[str] = field(default_factory=list)


class _TokenTally:
    """Tokens generated so far over every request of one ``reason`` call, reported as a total with
    the call's budget. Backends report per request, possibly from their own threads."""

    def __init__(self, report: Callable[[int, int], None], budget: int) -> None:
        self._report = report
        self._budget = budget
        self._counts: list[int] = []
        self._lock = threading.Lock()

    def counter(self) -> Callable[[int], None]:
        """The ``on_tokens`` callback of one more request."""
        with self._lock:
            slot = len(self._counts)
            self._counts.append(0)

        def on_tokens(tokens: int) -> None:
            with self._lock:
                self._counts[slot] = tokens
                total = sum(self._counts)
            self._report(total, self._budget)

        return on_tokens


@dataclass
class _Reasoner:
    """Everything one ``reason`` call shares between its variants."""

    image: Image.Image
    backend: VLMBackend
    geocoder: ReverseGeocoder
    template: PromptTemplate
    repair_template: PromptTemplate
    json_schema: dict[str, Any]
    answer_format: str
    samples: int
    temperature: float
    max_tokens: int
    tally: _TokenTally | None = None

    def request(self, messages: list[ChatMessage], n: int) -> VLMRequest:
        return VLMRequest(
            messages=messages,
            json_schema=self.json_schema,
            n=n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            schema_name=SCHEMA_NAME,
            on_tokens=self.tally.counter() if self.tally is not None else None,
        )

    def record(self, template: PromptTemplate, variant: str, rendered: str) -> PromptRecord:
        return PromptRecord(
            template_id=template.id,
            template_hash=template.sha256,
            variant=variant,
            model=self.backend.model_id,
            rendered=rendered,
        )

    def failure(
        self, template: PromptTemplate, variant: str, index: int, error: str, raw: str | None,
        kind: str = "invalid",
    ) -> ReasoningFailure:
        return ReasoningFailure(
            kind=kind,
            variant=variant,
            template_id=template.id,
            template_hash=template.sha256,
            model=self.backend.model_id,
            error=error,
            raw_text=raw,
            sample_index=index,
        )

    def cut_off(self, template: PromptTemplate, variant: str, index: int, reply: VLMReply) -> ReasoningFailure:
        """A reply the token limit ended: its own kind of failure, with the text kept."""
        return self.failure(
            template, variant, index,
            f"the reply was cut off at the token limit ({self.max_tokens} tokens, vlm.max_new_tokens) "
            "before the answer was complete; raise vlm.max_new_tokens",
            reply.text, "cut_off",
        )
    def accept(
        self, outcome: _Outcome, answer: GeoAnswer, raw: str, template: PromptTemplate, variant: str, index: int,
        shown: Sequence[ShownCoordinate],
    ) -> None:
        """A valid answer becomes an abstention (null coordinate) or a hypothesis (echo-checked)."""
        origin = AnswerOrigin(template.id, template.sha256, self.backend.model_id, variant, index)
        result = answer_result(answer, raw, origin, self.geocoder, shown)
        if isinstance(result, Abstention):
            outcome.abstentions.append(result)
        else:
            outcome.hypotheses.append(result)

    async def run_variant(self, variant: str, prompt: str, shown: Sequence[ShownCoordinate] = ()) -> _Outcome:
        outcome = _Outcome(prompts=[self.record(self.template, variant, prompt)])
        question = ChatMessage("user", prompt, [self.image])
        try:
            replies = as_replies(await self.backend.generate(self.request([question], self.samples)))
        except VLMRequestError as exc:
            for index in range(self.samples):
                outcome.failures.append(
                    self.failure(self.template, variant, index, f"VLM request failed: {exc}", None, "request")
                )
            return outcome
        texts = [reply.text for reply in replies]
        outcome.raw_replies.extend(texts)
        repairs: list[tuple[int, str, str]] = []  # (sample index, reply, why it is invalid)
        for index, reply in enumerate(replies):
            text = reply.text
            if reply.cut_off:
                # Not repaired: a second try in the same budget would be cut off again.
                outcome.failures.append(self.cut_off(self.template, variant, index, reply))
                continue
            try:
                self.accept(outcome, parse_answer(text), text, self.template, variant, index, shown)
            except AnswerParseError as exc:
                repairs.append((index, text, str(exc)))
        for index in range(len(texts), self.samples):
            outcome.failures.append(
                self.failure(
                    self.template, variant, index,
                    f"the backend returned {len(texts)} of {self.samples} samples", None,
                )
            )
        results = await asyncio.gather(
            *(self.repair(question, variant, index, text, error, shown) for index, text, error in repairs)
        )
        for repaired in results:
            outcome.prompts.extend(repaired.prompts)
            outcome.raw_replies.extend(repaired.raw_replies)
            outcome.hypotheses.extend(repaired.hypotheses)
            outcome.abstentions.extend(repaired.abstentions)
            outcome.failures.extend(repaired.failures)
        outcome.hypotheses.sort(key=lambda h: h.sample_index)
        outcome.failures.sort(key=lambda f: f.sample_index)
        return outcome

    async def repair(
        self, question: ChatMessage, variant: str, index: int, reply: str, error: str,
        shown: Sequence[ShownCoordinate] = (),
    ) -> _Outcome:
        """Re-ask once, quoting the validation error; a second invalid reply is a failure."""
        prompt = render(self.repair_template, error=error, answer_format=self.answer_format)
        outcome = _Outcome(prompts=[self.record(self.repair_template, variant, prompt)])
        messages = [question, ChatMessage("assistant", reply[:MAX_ECHOED_REPLY_CHARS]), ChatMessage("user", prompt)]
        try:
            replies = as_replies(await self.backend.generate(self.request(messages, 1)))
        except VLMRequestError as exc:
            outcome.failures.append(
                self.failure(
                    self.template, variant, index,
                    f"invalid answer: {error}; the repair request failed: {exc}", reply, "request",
                )
            )
            return outcome
        second = replies[0].text if replies else ""
        outcome.raw_replies.append(second)
        if replies and replies[0].cut_off:
            outcome.failures.append(self.cut_off(self.repair_template, variant, index, replies[0]))
            return outcome
        try:
            answer = parse_answer(second)
        except AnswerParseError as exc:
            outcome.failures.append(
                self.failure(
                    self.template, variant, index,
                    f"invalid answer: {error}; still invalid after one repair: {exc}", reply,
                )
            )
            return outcome
        self.accept(outcome, answer, second, self.repair_template, variant, index, shown)
        return outcome


async def reason(
    image: Image.Image,
    retrieval: RetrievalResult,
    backend: VLMBackend,
    config: Config,
    geocoder: ReverseGeocoder,
    *,
    hint: str | None = None,
    on_tokens: Callable[[int, int], None] | None = None,
) -> ReasoningResult:
    """Hypotheses (and failures, with raw text) from every prompt variant and sample.

    ``on_tokens(tokens, budget)``: progress, called (possibly from a backend's thread) with the
    tokens generated so far over all prompts and the most the first answers may take
    (variants x samples x ``vlm.max_new_tokens``; repair turns come on top).

    ``hint``: what the user told us about the place (e.g. a chat hint: their words plus the
    constraint they stand for); every variant's prompt shows it in its own block. None or blank:
    no such block.

    Hypotheses that came out of a repair turn carry the repair template's id and hash; the
    original prompt and the repair prompt are both in ``prompts``. ``raw_replies`` holds every
    reply in order: per variant, the samples, then the repair replies.
    """
    variants = plan_variants(
        retrieval, config.prompts.neighbor_counts, include_dissimilar=config.prompts.include_dissimilar
    )
    template = load_template(config.prompts.reasoning_template)
    reasoner = _Reasoner(
        image=image,
        backend=backend,
        geocoder=geocoder,
        template=template,
        repair_template=load_template(REPAIR_TEMPLATE_ID),
        json_schema=answer_json_schema(),
        answer_format=answer_skeleton(),
        # At temperature 0 every sample would be the same answer: ask once.
        samples=config.vlm.samples_per_variant if config.vlm.temperature > 0 else 1,
        temperature=config.vlm.temperature,
        max_tokens=config.vlm.max_new_tokens,
    )
    if on_tokens is not None:
        reasoner.tally = _TokenTally(on_tokens, len(variants) * reasoner.samples * reasoner.max_tokens)
    neighbors = _context_rows(retrieval.neighbors, _place_labels(retrieval.neighbors, geocoder))
    dissimilar = _context_rows(retrieval.dissimilar, _place_labels(retrieval.dissimilar, geocoder))
    gps = _context_rows(retrieval.gps_candidates, _place_labels(retrieval.gps_candidates, geocoder))
    prompts = [
        render(
            template,
            neighbors=neighbors[: v.n_neighbors],
            dissimilar=dissimilar[: v.n_dissimilar],
            gps_candidates=gps[: v.n_gps],
            hint=_clean(hint),
            answer_format=reasoner.answer_format,
        )
        for v in variants
    ]
    outcomes = await asyncio.gather(
        *(reasoner.run_variant(v.name, prompt, shown_coordinates(v, retrieval))
          for v, prompt in zip(variants, prompts, strict=True)),
        return_exceptions=True,  # let every variant finish before a misconfiguration error propagates
    )
    result = ReasoningResult()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        result.hypotheses.extend(outcome.hypotheses)
        result.abstentions.extend(outcome.abstentions)
        result.failures.extend(outcome.failures)
        result.prompts.extend(outcome.prompts)
        result.raw_replies.extend(outcome.raw_replies)
    return result
