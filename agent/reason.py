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
from geosleuth.errors import ConfigError, VLMError
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
    Candidate,
    Clue,
    GalleryNeighbor,
    GPSCandidate,
    Hypothesis,
    Place,
    Prediction,
    PromptRecord,
    ReasoningFailure,
    ReasoningResult,
    RetrievalResult,
    RunSummary,
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
class FollowupLimits:
    """How much of a result and its run summary a follow-up prompt quotes.

    A run can hold hundreds of candidates and long model texts; the follow-up prompt must still
    fit a small model's context, so every list is cut to a count and every text to a length.
    """

    candidates: int = 5
    hypotheses: int = 6  # spread over the prompt variants
    clues_per_hypothesis: int = 2
    clues: int = 5  # the prediction's supporting clues
    failures: int = 3
    clusters: int = 4  # places the fusion weighed, heaviest first
    abstentions: int = 2
    text_chars: int = 120  # any one quoted text (clue, place, error)


FOLLOWUP_LIMITS = FollowupLimits()


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


def _clip(text: str | None, limit: int) -> str | None:
    """``text`` on one line, cut to ``limit`` characters (model and user texts can be long)."""
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(limit - 1, 0)].rstrip() + "…"


def _clue_rows(clues: Sequence[Clue], count: int, limits: FollowupLimits) -> list[dict[str, Any]]:
    return [
        {"observation": _clip(c.observation, limits.text_chars), "implication": _clip(c.implication, limits.text_chars)}
        for c in clues[:count]
    ]


def _candidate_rows(candidates: Sequence[Candidate], limits: FollowupLimits) -> list[dict[str, Any]]:
    return [
        {
            "lat": c.lat,
            "lon": c.lon,
            "place": _clip(c.place.hierarchy(), limits.text_chars) if c.place else None,
            "source": c.source.value,
            "score": c.score,
            "confidence": c.confidence,
            "scores": [{"name": _clip(name, limits.text_chars), "value": value} for name, value in c.scores.items()],
        }
        for c in candidates[: limits.candidates]
    ]


def _hypotheses_by_variant(hypotheses: Sequence[Hypothesis], limits: FollowupLimits) -> list[dict[str, Any]]:
    """At most ``limits.hypotheses`` answers, grouped by prompt variant: every variant's first
    sample before any variant's second, so a cut keeps the variety rather than one variant."""
    by_variant: dict[str, list[Hypothesis]] = {}
    for hypothesis in hypotheses:
        by_variant.setdefault(hypothesis.variant, []).append(hypothesis)
    chosen = sorted(
        ((rank, position, h) for position, group in enumerate(by_variant.values()) for rank, h in enumerate(group)),
        key=lambda item: (item[0], item[1]),
    )[: limits.hypotheses]
    rows: dict[str, list[dict[str, Any]]] = {}
    for _, _, h in sorted(chosen, key=lambda item: (item[1], item[0])):
        levels = [level for level in (h.continent, h.country, h.region, h.city) if level]
        rows.setdefault(h.variant, []).append(
            {
                "place": _clip(" > ".join(levels), limits.text_chars) if levels else None,
                "lat": h.lat,
                "lon": h.lon,
                "confidence": h.confidence,
                "clues": _clue_rows(h.clues, limits.clues_per_hypothesis, limits),
            }
        )
    return [{"variant": _clip(variant, limits.text_chars), "answers": answers} for variant, answers in rows.items()]


def _cluster_rows(prediction: Prediction, limits: FollowupLimits) -> list[dict[str, Any]]:
    """The places the fusion weighed, heaviest first: centre, place, share of the evidence, and
    each source's share of its own evidence that falls there."""
    if prediction.evidence is None:
        return []
    return [
        {
            "lat": c.lat,
            "lon": c.lon,
            "place": _clip(c.place.hierarchy(), limits.text_chars) if c.place else None,
            "posterior": c.posterior,
            "sources": [{"name": _clip(e.source, limits.text_chars), "mass": e.mass, "count": e.items}
                        for e in c.sources if e.items],
        }
        for c in prediction.evidence.clusters[: limits.clusters]
    ]


def _run_rows(summary: RunSummary, limits: FollowupLimits) -> dict[str, Any]:
    """What the follow-up prompt quotes about how the result was reached, besides its candidates:
    the VLM's answers per variant, the sources used, the user's constraints and what failed, each
    list cut."""
    prediction = summary.prediction
    failures = prediction.failures
    return {
        "variants": _hypotheses_by_variant(summary.hypotheses, limits),
        "hypotheses_shown": min(len(summary.hypotheses), limits.hypotheses),
        "hypotheses_total": len(summary.hypotheses),
        "reused_answers": summary.reused_answers,
        "sources": [_clip(s, limits.text_chars) for s in prediction.sources_used],
        "constraints": [_clip(c, limits.text_chars) for c in summary.constraints],
        "rejected_total": len(summary.rejected),
        "clusters": _cluster_rows(prediction, limits),
        "clusters_total": len(prediction.evidence.clusters) if prediction.evidence is not None else 0,
        "abstentions": [_clip(a.reason, limits.text_chars) for a in summary.abstentions[: limits.abstentions]],
        "abstentions_total": len(summary.abstentions),
        "failures": [
            {"step": _clip(f.step, limits.text_chars), "error": _clip(f.error, limits.text_chars)}
            for f in failures[: limits.failures]
        ],
        "failures_total": len(failures),
    }


async def answer_followup(
    backend: VLMBackend,
    image: Image.Image | None,
    result: Prediction | RunSummary,
    question: str,
    *,
    config: Config,
    history: Sequence[tuple[str, str]] = (),
    limits: FollowupLimits = FOLLOWUP_LIMITS,
) -> str:
    """The VLM's plain-text answer to a user's question about an earlier result.

    ``result``: the run's :class:`RunSummary` (the prediction, every ranked candidate with its
    component scores, the VLM's answers per variant, constraints, failures), or only its
    :class:`Prediction` (then its alternatives stand for the candidates). ``history`` holds earlier
    (question, answer) turns of the same conversation, oldest first; the first turn carries the
    result summary (template ``config.prompts.chat_template``, every list cut to ``limits``) and
    the image. Backend errors propagate (the chat shows them); an empty reply raises
    :class:`VLMError`.
    """
    if not question.strip():
        raise VLMError("the question is empty; type a question about the result")
    template = load_template(config.prompts.chat_template)
    summary = result if isinstance(result, RunSummary) else None
    prediction = result.prediction if isinstance(result, RunSummary) else result
    # The summary ranks every candidate verification scored; a bare prediction, its alternatives.
    candidates = summary.candidates if summary is not None and summary.candidates else prediction.alternatives
    turns = [*history, (question, "")]
    first = render(
        template,
        prediction=prediction,
        place=_clip(prediction.place.hierarchy(), limits.text_chars) if prediction.place else None,
        levels=prediction.levels.summary() if prediction.levels is not None else None,
        missing=[_clip(m, limits.text_chars) for m in prediction.missing_stages] if prediction.degraded else [],
        clues=_clue_rows(prediction.clues, limits.clues, limits),
        clues_total=len(prediction.clues),
        candidates=_candidate_rows(candidates, limits),
        candidates_total=len(candidates),
        run=_run_rows(summary, limits) if summary is not None else None,
        question=turns[0][0],
    )
    messages = [ChatMessage("user", first, [image] if image is not None else [])]
    for index, (asked, answered) in enumerate(turns):
        if index:
            messages.append(ChatMessage("user", asked))
        if answered:
            messages.append(ChatMessage("assistant", answered))
    request = VLMRequest(
        messages=messages, json_schema=None, n=1, temperature=config.vlm.temperature,
        max_tokens=config.vlm.max_new_tokens,
    )
    replies = as_replies(await backend.generate(request))
    answer = replies[0].text.strip() if replies else ""
    if not answer:
        raise VLMError(f"the VLM ({backend.model_id}) returned an empty answer; ask again or rephrase the question")
    return answer
