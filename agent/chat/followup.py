"""Answer a user's follow-up question about an earlier result (chat turns after the first).

The first turn of the conversation quotes the run: the prediction, its ranked candidates with their
component scores, the VLM's answers per prompt variant, the user's constraints and what failed, each
list cut to :class:`FollowupLimits` so the prompt fits a small model's context (template
``config.prompts.chat_template``). The context is the typed :class:`~geosleuth.types.RunSummary`,
never trace JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geosleuth.errors import VLMError
from geosleuth.prompts.render import load_template, render
from geosleuth.types import Candidate, Clue, Hypothesis, Prediction, RunSummary
from geosleuth.vlm.backends import ChatMessage, VLMBackend, VLMRequest, as_replies

if TYPE_CHECKING:
    from PIL import Image

    from geosleuth.config import Config


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
