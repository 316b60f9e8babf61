"""The chat graph: one LangGraph graph per turn, over a persisted :class:`ChatState`.

- first turn: locate the image (the locate graph, no hints);
- a question ("why Portugal?") is answered by the VLM with the image and the latest run's typed
  :class:`~geosleuth.types.RunSummary` as context, earlier turns included;
- a hint ("it is in South America", "within 50 km of Porto", "clear hints") re-runs the locate
  graph under the constraints: retrieval inside them, verification filtering them, and the VLM's
  earlier answers reused only when most of them lie inside (:func:`answers_for_hints`); otherwise
  the VLM is asked again, told the hints in the user's words (:func:`~.hints.hint_text`).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from geosleuth.agent.chat.followup import answer_followup
from geosleuth.agent.chat.hints import hint_text, merge_constraints, parse_hint
from geosleuth.agent.chat.places import PlaceResolver
from geosleuth.agent.chat.results import ReplyKind
from geosleuth.constraints import Constraint, contains_all
from geosleuth.geo import haversine_km
from geosleuth.imageio import load_image
from geosleuth.types import Prediction, ReasoningResult, RunSummary

if TYPE_CHECKING:
    from geosleuth.agent.graph import LocatePipeline, ProgressCallback, StepCallback
    from geosleuth.geo import ReverseGeocoder


class ChatState(TypedDict, total=False):
    # persistent (JSON-able values only: they are checkpointed)
    session_id: str
    image_path: str
    prediction: dict[str, Any] | None
    trace: dict[str, Any] | None  # for viewing (`/trace`, the web app's trace tab); never parsed here
    summary: dict[str, Any] | None  # the latest run's RunSummary: what follow-ups are answered from
    reasoning: dict[str, Any] | None  # the VLM's latest full set of answers (reused under hints that fit)
    reasoning_hints: list[str]  # labels of the hints the VLM was told when it gave those answers
    constraints: list[dict[str, Any]]
    hint_words: dict[str, str]  # active constraint's label -> the message that gave it
    history: Annotated[list[dict[str, Any]], operator.add]
    # per turn (reset by every turn's input)
    message: str | None
    route: str | None
    reply: dict[str, Any] | None


@dataclass(frozen=True)
class ChatContext:
    pipeline: LocatePipeline
    resolver: PlaceResolver
    on_step: StepCallback | None = None  # this turn's finished-step listener (see LocatePipeline.run)
    on_progress: ProgressCallback | None = None  # this turn's live progress listener (idem)


def describe(prediction: Prediction) -> str:
    """A short human summary of a prediction."""
    if not prediction.ok:
        return f"I could not locate this photo: {prediction.failure_reason}"
    assert prediction.lat is not None and prediction.lon is not None
    place = prediction.place.hierarchy() if prediction.place else "unknown place"
    text = f"Best guess: {place} ({prediction.lat:.4f}, {prediction.lon:.4f})"
    if prediction.confidence is not None:
        text += f", confidence {prediction.confidence:.2f}"
    text += f"; sources: {', '.join(prediction.sources_used) or 'none'}."
    if prediction.levels is not None:
        text += f"\n{prediction.levels.summary()}"
    if prediction.degraded:
        text += f"\nDegraded: answered without {', '.join(prediction.missing_stages)}."
    for failure in prediction.failures:
        text += f"\nNote ({failure.step}): {failure.error}"
    return text


@dataclass(frozen=True)
class AnswersForHints:
    """What to do with the VLM's earlier answers under new hints."""

    reuse: ReasoningResult | None  # the answers to reuse (only those inside), or None: ask the VLM again
    inside: int
    total: int
    dropped: tuple[str, ...] = ()  # hints the earlier answers were given under that are no longer active

    @property
    def note(self) -> str:
        if self.dropped:
            dropped = "; ".join(self.dropped)
            return f"asked the VLM again: its earlier answers were given under hints now dropped ({dropped})"
        if self.reuse is not None:
            if self.inside == self.total:
                return ""
            return f"kept {self.inside} of {self.total} earlier VLM answers: the others lie outside the hints"
        if self.total == 0:
            return "asked the VLM again: it had no usable earlier answer"
        return (f"{self.total - self.inside} of {self.total} earlier VLM answers contradict the hints: "
                "asked the VLM again, with the hints")


def answers_for_hints(prior: ReasoningResult, constraints: Sequence[Constraint], geocoder: ReverseGeocoder, *,
                      asked_under: Sequence[str] = ()) -> AnswersForHints:
    """Reuse the earlier answers that lie inside ``constraints``, unless most of them do not.

    A hint that contradicts most answers (more than half outside) says the model misread the photo,
    and the few answers that happen to fit are not evidence: the VLM is asked again, with the hint.
    Reused answers are only those inside: an answer outside a constraint never counts as support.
    ``asked_under``: the labels of the hints the VLM was told when it gave ``prior``; answers given
    under a hint the user has since dropped are not reused either.
    """
    hypotheses = prior.hypotheses
    active = {c.label for c in constraints}
    dropped = tuple(label for label in asked_under if label not in active)
    if dropped:
        return AnswersForHints(None, 0, len(hypotheses), dropped)
    if not constraints:
        return AnswersForHints(prior if hypotheses else None, len(hypotheses), len(hypotheses))
    inside = contains_all(constraints, [h.lat for h in hypotheses], [h.lon for h in hypotheses], geocoder)
    count = int(inside.sum())
    if count == 0 or 2 * count < len(hypotheses):  # more than half outside
        return AnswersForHints(None, count, len(hypotheses))
    kept = [h for h, ok in zip(hypotheses, inside.tolist(), strict=True) if ok]
    return AnswersForHints(prior.model_copy(update={"hypotheses": kept}), count, len(hypotheses))


def _constraints(state: ChatState) -> list[Constraint]:
    return [Constraint.model_validate(c) for c in state.get("constraints") or []]


def _turn(user: str | None, text: str, kind: ReplyKind, notes: Sequence[str] = ()) -> dict[str, Any]:
    return {"reply": {"kind": kind, "text": text, "notes": list(notes)},
            "history": [{"user": user, "reply": text, "kind": kind}]}


async def _locate(state: ChatState, runtime: Runtime[ChatContext], *, relocating: bool) -> dict[str, Any]:
    constraints = _constraints(state)
    geocoder = runtime.context.resolver.geocoder
    stored = state.get("reasoning")
    prior = ReasoningResult.model_validate(stored) if relocating and stored else None
    asked_under = state.get("reasoning_hints") or []
    plan = answers_for_hints(prior, constraints, geocoder, asked_under=asked_under) if prior is not None else None
    listeners = {"on_step": runtime.context.on_step, "on_progress": runtime.context.on_progress}
    options: dict[str, Any] = {name: listener for name, listener in listeners.items() if listener is not None}
    outcome = await runtime.context.pipeline.run(
        state["image_path"],
        constraints=constraints,
        prior_reasoning=plan.reuse if plan is not None else None,
        hint=hint_text(constraints, state.get("hint_words") or {}, geocoder) if relocating else None,
        **options,
    )
    prediction = outcome.prediction
    summary = outcome.summary or RunSummary(  # a pipeline wrapper that builds outcomes itself
        prediction=prediction, candidates=list(prediction.alternatives),
        hypotheses=outcome.reasoning.hypotheses if outcome.reasoning is not None else [],
        reasoning_failures=outcome.reasoning.failures if outcome.reasoning is not None else [],
        abstentions=outcome.reasoning.abstentions if outcome.reasoning is not None else [],
        constraints=[c.label for c in constraints],
    )
    text = describe(prediction)
    notes = []
    if relocating:
        where = " and ".join(c.label for c in constraints) or "no hints"
        text = f"With {where}: {text}"
        if plan is not None and plan.note and runtime.context.pipeline.resources.backend is not None:
            notes.append(plan.note)
            text += f"\n({plan.note})"
        before = state.get("prediction") or {}
        if prediction.ok and before.get("lat") is not None:
            moved = float(haversine_km(before["lat"], before["lon"], prediction.lat, prediction.lon))
            text += f"\n(moved {moved:.0f} km from the previous answer)"
    # Reused answers are a subset: keep the full earlier set for later hints (e.g. "clear hints").
    reused = plan is not None and plan.reuse is not None
    if reused or outcome.reasoning is None:
        reasoning, reasoning_hints = stored, asked_under
    else:  # the VLM answered this run, told the active hints (none on the opening locate)
        reasoning, reasoning_hints = outcome.reasoning.model_dump(mode="json"), [c.label for c in constraints]
    return {
        "reasoning_hints": reasoning_hints,
        "prediction": prediction.model_dump(mode="json"),
        "trace": outcome.trace.model_dump(mode="json"),
        "summary": summary.model_dump(mode="json"),
        "reasoning": reasoning,
        **_turn(state.get("message") if relocating else None, text, "relocated" if relocating else "located", notes),
    }


async def locate_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    return await _locate(state, runtime, relocating=False)


async def interpret_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    message = state.get("message") or ""
    hint = parse_hint(message, runtime.context.resolver)
    if hint.kind == "question":
        return {"route": "answer"}
    if hint.kind == "clear":
        return {"route": "relocate", "constraints": [], "hint_words": {}}
    if hint.kind == "unknown-place":
        text = (
            f"I could not place {hint.place_text!r}: I know continents, countries and cities of 15,000+ people "
            "(e.g. 'it is in South America', 'it's in Spain', 'within 50 km of Porto'). Nothing changed."
        )
        return {"route": "done", **_turn(message, text, "not-understood")}
    assert hint.constraint is not None
    merged = merge_constraints(_constraints(state), hint.constraint)
    earlier = state.get("hint_words") or {}
    words = {c.label: earlier[c.label] for c in merged if c.label in earlier}
    words[hint.constraint.label] = message.strip()
    return {"route": "relocate", "constraints": [c.model_dump(mode="json") for c in merged], "hint_words": words}


async def relocate_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    return await _locate(state, runtime, relocating=True)


async def answer_node(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    message = state.get("message") or ""
    resources = runtime.context.pipeline.resources
    if resources.backend is None:
        text = (
            "I cannot answer questions without a vision-language model (vlm.backend is 'none'). "
            "You can still give hints such as 'it is in South America' or 'within 50 km of Porto'."
        )
        return _turn(message, text, "no-vlm")
    config = resources.config
    loaded = await asyncio.to_thread(load_image, state["image_path"], max_pixels=config.vlm.max_image_pixels)
    history = [
        (turn["user"], turn["reply"])
        for turn in state.get("history") or []
        if turn.get("user") and turn.get("kind") in ("answer", "relocated", "not-understood")
    ]
    summary = (RunSummary.model_validate(state["summary"]) if state.get("summary")
               # a session saved before summaries were kept: the prediction is all there is
               else RunSummary.of_prediction(Prediction.model_validate(state["prediction"])))
    text = await answer_followup(resources.backend, loaded.image, summary, message, config=config, history=history)
    return _turn(message, text, "answer")


def _route_start(state: ChatState) -> str:
    if not state.get("prediction"):
        return "locate"
    return "interpret" if state.get("message") else END


def _route_after_locate(state: ChatState) -> str:
    return "interpret" if state.get("message") else END


def _route_after_interpret(state: ChatState) -> str:
    return {"answer": "answer", "relocate": "relocate"}.get(state.get("route") or "", END)


def build_chat_graph() -> StateGraph:
    graph = StateGraph(ChatState, context_schema=ChatContext)
    graph.add_node("locate", locate_node)
    graph.add_node("interpret", interpret_node)
    graph.add_node("relocate", relocate_node)
    graph.add_node("answer", answer_node)
    graph.add_conditional_edges(START, _route_start, ["locate", "interpret", END])
    graph.add_conditional_edges("locate", _route_after_locate, ["interpret", END])
    graph.add_conditional_edges("interpret", _route_after_interpret, ["answer", "relocate", END])
    graph.add_edge("relocate", END)
    graph.add_edge("answer", END)
    return graph
