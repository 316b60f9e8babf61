"""The locate graph: perceive -> retrieve -> reason -> verify -> decide, as a LangGraph StateGraph.

Each node is a plain async function over :class:`~geosleuth.agent.state.LocateState` that calls its
stage module and returns only the keys it produces, plus one TraceEvent. The once-per-process
models arrive as the run's LangGraph context (:class:`~geosleuth.agent.runtime.Resources`).
CPU-bound work (decoding, encoders, index search) runs in worker threads so many images can be in
flight on one event loop.

Failure policy: a bad image (perceive) or a broken index (retrieve) raises; unusable replies, an
unreachable server or a crash in the VLM step are recorded in ``failures`` and the answer comes from
retrieval, marked ``status = degraded`` with ``missing_stages = ["vlm"]`` (every stage the
configuration asks for that did not contribute is named there); a VLM misconfiguration every image
would hit (refused API key, model not served) raises; an image with no candidate at all gets a
Prediction with lat=None, status ``failed`` and a reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from geosleuth.agent.decide import decide
from geosleuth.agent.perceive import perceive
from geosleuth.agent.progress import announced, token_reporter
from geosleuth.agent.reason import reason
from geosleuth.agent.retrieve import retrieve
from geosleuth.agent.runtime import Resources
from geosleuth.agent.state import LocateState, initial_state
from geosleuth.agent.step_events import reasoning_failures as _reasoning_failures
from geosleuth.agent.step_events import reasoning_outputs as _reasoning_outputs
from geosleuth.agent.step_events import step_event as _event
from geosleuth.agent.toolloop.fallback import fallback_note
from geosleuth.agent.verify import Verification, verify, weights_of
from geosleuth.constraints import Constraint
from geosleuth.errors import GeosleuthError
from geosleuth.types import (
    STAGE_GALLERY,
    STAGE_GPS_GALLERY,
    STAGE_VLM,
    CandidateSource,
    Prediction,
    ProgressEvent,
    ReasoningResult,
    RunSummary,
    StepFailure,
    Trace,
    TraceEvent,
)
from geosleuth.vlm.backends import VLMRequestError

STEPS = ("perceive", "retrieve", "reason", "verify", "decide")
SOURCE_VLM = "vlm"
SOURCE_USER = "user"
# Source names in Prediction.sources_used, by candidate source.
_SOURCE_NAMES = {
    CandidateSource.RETRIEVAL: "gallery",
    CandidateSource.GPS_GALLERY: "gps-gallery",
    CandidateSource.VLM: SOURCE_VLM,
    CandidateSource.USER: SOURCE_USER,
    CandidateSource.OCR: "text",
}
# Called with (step name, its TraceEvent) as each step of a run finishes.
StepCallback = Callable[[str, TraceEvent | None], Awaitable[None]]
# Called with each ProgressEvent while a run works (step started, VLM tokens so far, step finished).
ProgressCallback = Callable[[ProgressEvent], Awaitable[None]]


# ---------------------------------------------------------------------------------------------
# Nodes


async def perceive_node(state: LocateState, runtime: Runtime[Resources]) -> dict[str, Any]:
    started = time.perf_counter()
    res = runtime.context
    perception = await asyncio.to_thread(
        perceive, state["image_path"], res.image_encoder, max_pixels=res.config.vlm.max_image_pixels
    )
    emb = perception.embeddings
    text = None
    if res.text_tools is not None:  # optional evidence: a photo without readable text simply has none
        from geosleuth.agent.tools.text_evidence import read_text_evidence

        text = await asyncio.to_thread(read_text_evidence, perception.image.image, res.text_tools)
    outputs = {
        "image": perception.ref.model_dump(mode="json"),
        "decoded_size": list(perception.image.image.size),
        "retrieval_embedding_dim": int(emb.retrieval.shape[1]),
        "geoclip_embedding": emb.geoclip is not None,
        # EXIF GPS is reported, never used as a candidate: the answer must come from the pixels.
        "exif_gps": perception.ref.exif.gps.model_dump() if perception.ref.exif and perception.ref.exif.gps else None,
        "text": text.model_dump(mode="json") if text is not None else None,
    }
    return {
        "text": text,
        "image": perception.image.image,
        "image_ref": perception.ref,
        "embeddings": emb,
        "events": [_event(state, "perceive", started, {"image_path": state["image_path"]}, outputs)],
    }


async def retrieve_node(state: LocateState, runtime: Runtime[Resources]) -> dict[str, Any]:
    started = time.perf_counter()
    res = runtime.context
    constraints = state.get("constraints", [])
    retrieval = await asyncio.to_thread(
        retrieve,
        state["embeddings"],
        res.store,
        res.gps_gallery,
        res.config,
        res.geocoder,
        constraints=constraints,
        exclude_ids=state.get("exclude_ids", []),
        exclude_authors=state.get("exclude_authors", []),
    )
    settings = res.config.retrieval
    inputs = {
        "k_neighbors": settings.k_neighbors,
        "k_dissimilar": settings.k_dissimilar,
        "k_gps": settings.k_gps,
        "gallery": res.store is not None,
        "gps_gallery": res.gps_gallery is not None,
        "constraints": [c.label for c in constraints],
        "exclude_ids": len(state.get("exclude_ids", [])),
        "exclude_authors": len(settings.exclude_authors) + len(state.get("exclude_authors", [])),
    }
    return {
        "retrieval": retrieval,
        "events": [_event(state, "retrieve", started, inputs, retrieval.model_dump(mode="json"))],
    }


async def reason_node(state: LocateState, runtime: Runtime[Resources]) -> dict[str, Any]:
    started = time.perf_counter()
    res = runtime.context
    config = res.config
    inputs: dict[str, Any] = {
        "model": res.backend.model_id if res.backend is not None else None,
        "template": config.prompts.reasoning_template,
        "neighbor_counts": list(config.prompts.neighbor_counts),
        "samples_per_variant": config.vlm.samples_per_variant,
        "temperature": config.vlm.temperature,
        "max_new_tokens": config.vlm.max_new_tokens,
        "recipe": config.vlm.recipe,
        "hint": state.get("hint"),
        "agent_mode": config.agent.mode,
    }
    if res.backend is None:
        outputs = {"skipped": "vlm.backend is 'none': answering from retrieval only"}
        return {"reasoning": None, "events": [_event(state, "reason", started, inputs, outputs)]}

    prior = state.get("prior_reasoning")
    if prior is not None:  # the caller (the chat) chose earlier answers that fit its hints
        outputs = {"reused_earlier_answers": True, **_reasoning_outputs(prior)}
        return {
            "reasoning": prior,
            "failures": _reasoning_failures(prior),
            "events": [_event(state, "reason", started, inputs, outputs)],
        }
    fallback: list[StepFailure] = []
    try:
        if config.agent.mode == "tools" and res.tools_fallback is None:
            from geosleuth.agent.toolloop.node import tools_reason_update

            update = await tools_reason_update(state, res, started, inputs, token_reporter(state, runtime))
            if update is not None:
                return update
        if res.tools_fallback:  # agent.mode = tools on a server that cannot call tools (found once)
            fallback = [StepFailure(step="reason", error=fallback_note(res.tools_fallback))]
            inputs["agent_mode"] = f"pipeline (fallback from tools: {res.tools_fallback})"
        reasoning = await reason(
            state["image"], state["retrieval"], res.backend, config, res.geocoder, hint=state.get("hint"),
            on_tokens=token_reporter(state, runtime),
        )
    except Exception as exc:
        if isinstance(exc, GeosleuthError) and not isinstance(exc, VLMRequestError):
            # A misconfiguration every image would hit (API key refused, model not served or
            # missing): the user must fix it, so it is not quietly turned into retrieval-only answers.
            raise
        # The server unreachable, or a crash in the VLM step (e.g. out of memory): record it.
        error = f"the VLM step failed ({type(exc).__name__}: {exc}); answered from retrieval only"
        return {
            "reasoning": None,
            "failures": [*fallback, StepFailure(step="reason", error=error)],
            "events": [_event(state, "reason", started, inputs, {}, error=error)],
        }
    return {
        "reasoning": reasoning,
        "failures": [*fallback, *_reasoning_failures(reasoning)],
        "events": [_event(state, "reason", started, inputs, _reasoning_outputs(reasoning))],
    }


async def verify_node(state: LocateState, runtime: Runtime[Resources]) -> dict[str, Any]:
    started = time.perf_counter()
    res = runtime.context
    reasoning = state.get("reasoning")
    hypotheses = reasoning.hypotheses if reasoning is not None else []
    geoclip = state["embeddings"].geoclip
    constraints = state.get("constraints", [])
    verification = await asyncio.to_thread(
        verify,
        state["retrieval"],
        hypotheses,
        geoclip_embedding=None if geoclip is None else geoclip[0],
        location_encoder=res.location_encoder,
        geocoder=res.geocoder,
        config=res.config.verify,
        constraints=constraints,
        calibration=res.calibration,
        text=state.get("text"),
        extra_candidates=state.get("proposed", []),
    )
    inputs = {
        "weights": weights_of(res.config.verify, res.calibration),
        "cluster_radius_km": res.config.verify.refine_radius_km,
        "calibration": res.calibration.label if res.calibration is not None else None,
        "constraints": [c.model_dump(mode="json") for c in constraints],
    }
    outputs = {
        "components": verification.components,
        "candidates": [c.model_dump(mode="json") for c in verification.ranked],
        "rejected_by_constraint": [c.model_dump(mode="json") for c in verification.rejected],
        "evidence": verification.evidence.model_dump(mode="json") if verification.evidence else None,
    }
    return {
        "ranked": verification.ranked,
        "rejected": verification.rejected,
        "evidence": verification.evidence,
        "events": [_event(state, "verify", started, inputs, outputs)],
    }


async def decide_node(state: LocateState, runtime: Runtime[Resources]) -> dict[str, Any]:
    started = time.perf_counter()
    res = runtime.context
    reasoning = state.get("reasoning")
    ranked = state.get("ranked", [])
    pool = [*ranked, *state.get("rejected", [])]
    sources = [name for source, name in _SOURCE_NAMES.items() if any(c.source == source for c in pool)]
    top_k = state.get("top_k") or res.config.verify.top_k
    prediction = decide(
        Verification(ranked=ranked, rejected=state.get("rejected", []), evidence=state.get("evidence")),
        image=state["image_ref"],
        hypotheses=reasoning.hypotheses if reasoning is not None else [],
        geocoder=res.geocoder,
        config=res.config.verify,
        top_k=top_k,
        sources_used=sources,
        failures=state.get("failures", []),
        no_candidate_reason=_no_candidate_reason(state, res),
    )
    prediction.trace_id = state["trace_id"]
    prediction.text = state.get("text")
    missing = missing_stages(state, res)
    if missing:  # re-validated: the status follows from the missing stages and the coordinate
        prediction = Prediction.model_validate({**prediction.model_dump(), "missing_stages": missing})
    outputs = {
        "lat": prediction.lat,
        "lon": prediction.lon,
        "place": prediction.place.model_dump(mode="json") if prediction.place else None,
        "confidence": prediction.confidence,
        "levels": prediction.levels.model_dump(mode="json") if prediction.levels else None,
        "sources_used": prediction.sources_used,
        "failure_reason": prediction.failure_reason,
        "status": prediction.status.value,
        "missing_stages": prediction.missing_stages,
    }
    inputs = {"ranked_candidates": len(ranked), "top_k": top_k, "refine_radius_km": res.config.verify.refine_radius_km}
    return {"prediction": prediction, "events": [_event(state, "decide", started, inputs, outputs)]}


def required_stages(res: Resources) -> list[str]:
    """The stages this configuration asks for: an answer without one of them is degraded."""
    required = []
    if res.backend is not None:  # vlm.backend != none
        required.append(STAGE_VLM)
    if res.store is not None:  # index.gallery is set
        required.append(STAGE_GALLERY)
    if res.gps_gallery is not None and res.config.retrieval.k_gps > 0:  # index.gps_gallery is not none
        required.append(STAGE_GPS_GALLERY)
    return required


def missing_stages(state: LocateState, res: Resources) -> list[str]:
    """Required stages that gave this image nothing: the VLM without one valid answer (a point, or
    an abstention: "cannot tell" is an answer, not an outage), a gallery that did not answer. (A GPS
    gallery needs a GeoCLIP embedding: without one it is not asked.)"""
    retrieval = state.get("retrieval")
    sources = retrieval.sources if retrieval is not None else []
    embeddings = state.get("embeddings")
    missing = []
    for stage in required_stages(res):
        if stage == STAGE_VLM:
            reasoning = state.get("reasoning")
            if reasoning is None or not (reasoning.hypotheses or reasoning.abstentions):
                missing.append(stage)
        elif stage == STAGE_GPS_GALLERY:
            if embeddings is not None and embeddings.geoclip is not None and stage not in sources:
                missing.append(stage)
        elif stage not in sources:
            missing.append(stage)
    return missing


def _no_candidate_reason(state: LocateState, res: Resources) -> str:
    constraints = state.get("constraints", [])
    rejected = state.get("rejected", [])
    if constraints and rejected:
        where = " and ".join(c.label for c in constraints)
        return (
            f"no candidate location lies {where}: all {len(rejected)} candidates were outside it; "
            "give a wider hint or drop it"
        )
    details = []
    if res.store is None:
        details.append("no image gallery configured (index.gallery)")
    elif not state["retrieval"].neighbors:
        details.append("the image gallery returned no neighbours")
    if res.gps_gallery is None:
        details.append("no GPS gallery (index.gps_gallery)")
    elif state["embeddings"].geoclip is None:
        details.append("no GeoCLIP embedding for the GPS gallery (encoders.image_encoder has no GeoCLIP head)")
    elif not state["retrieval"].gps_candidates:
        details.append("the GPS gallery returned no candidates (retrieval.k_gps)")
    if res.backend is None:
        details.append("no VLM (vlm.backend = none)")
    else:
        details += [f.error for f in state.get("failures", []) if f.step == "reason"]
        reasoning = state.get("reasoning")
        if reasoning is not None and reasoning.abstentions:
            why = reasoning.abstentions[0].reason
            details.append(f"the VLM said it cannot tell in {len(reasoning.abstentions)} answer(s) (e.g. {why!r})")
    if constraints:
        details.append("constraints " + " and ".join(c.label for c in constraints))
    return "no source proposed a candidate location: " + "; ".join(details or ["nothing was retrieved"])


def build_locate_graph() -> Any:
    """The compiled locate graph (run it with ``context=Resources``)."""
    graph = StateGraph(LocateState, context_schema=Resources)
    graph.add_node("perceive", announced("perceive", perceive_node))
    graph.add_node("retrieve", announced("retrieve", retrieve_node))
    graph.add_node("reason", announced("reason", reason_node))
    graph.add_node("verify", announced("verify", verify_node))
    graph.add_node("decide", announced("decide", decide_node))
    graph.add_edge(START, "perceive")
    for before, after in zip(STEPS, STEPS[1:], strict=False):
        graph.add_edge(before, after)
    graph.add_edge("decide", END)
    # checkpointer=False: never persisted, nor inherited when run inside the chat graph (the state
    # holds pixels and embeddings).
    return graph.compile(checkpointer=False, name="geosleuth-locate")


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class LocateOutcome:
    prediction: Prediction
    trace: Trace
    reasoning: ReasoningResult | None  # kept so a chat hint can reuse the VLM's answers
    # What a follow-up question is answered from (typed; the trace is for viewing). Always set by
    # LocatePipeline; None only from wrappers that build outcomes themselves.
    summary: RunSummary | None = None


class LocatePipeline:
    """The compiled locate graph bound to its resources; one per process, shared by every call."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.graph = build_locate_graph()

    def _start(
        self,
        image_path: str,
        *,
        constraints: Sequence[Constraint] = (),
        top_k: int | None = None,
        exclude_ids: Sequence[str] = (),
        exclude_authors: Sequence[str] = (),
        prior_reasoning: ReasoningResult | None = None,
        hint: str | None = None,
    ) -> dict[str, Any]:
        """The start state of one run: the keyword options of :meth:`run` and :meth:`stream`."""
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return initial_state(
            image_path,
            trace_id=uuid.uuid4().hex,
            clock=(time.time(), time.perf_counter()),
            constraints=constraints,
            top_k=top_k or self.resources.config.verify.top_k,
            exclude_ids=exclude_ids,
            exclude_authors=exclude_authors,
            prior_reasoning=prior_reasoning,
            hint=hint,
        )

    async def run(
        self, image_path: str, *, on_step: StepCallback | None = None, on_progress: ProgressCallback | None = None,
        **options: Any,
    ) -> LocateOutcome:
        """Locate one image. ``options`` (keyword only, see :meth:`_start`): ``constraints``, ``top_k``,
        ``exclude_ids``, ``exclude_authors``, ``prior_reasoning``, ``hint``. ``hint``: what the user told
        us, shown to the VLM (with ``constraints``, the areas it stands for, applied to retrieval and
        verification). ``prior_reasoning``: earlier VLM answers to reuse instead of asking again (the
        caller picks those that fit its constraints); the hint is then not shown to anyone.
        ``on_step``: awaited with ``(step, its TraceEvent)`` as each step finishes (progress displays).
        ``on_progress``: awaited with each :class:`ProgressEvent` while steps run (live displays)."""
        start = self._start(image_path, **options)
        if on_step is None and on_progress is None:
            return self.outcome(await self.graph.ainvoke(start, context=self.resources))
        final: dict[str, Any] = {}
        async for step, update in self._steps(start, progress=on_progress is not None):
            if step == "done":
                final = update
            elif step == "progress":
                if on_progress is not None:
                    await on_progress(update["progress"])
            elif on_step is not None:
                await on_step(step, update["event"])
        return self.outcome(final)

    async def stream(
        self, image_path: str, *, progress: bool = False, **options: Any
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``(step, update)`` per node as it finishes (``update["event"]`` is its TraceEvent), then
        ``("done", {"prediction": ..., "trace": ..., "summary": ...})``. ``progress``: also ``("progress",
        {"progress": ProgressEvent})`` while steps run (step started, VLM tokens so far, step finished).
        ``options``: those of :meth:`run` but ``prior_reasoning`` and ``on_step``."""
        if "prior_reasoning" in options:
            raise TypeError("LocatePipeline.stream() got an unexpected keyword argument 'prior_reasoning'")
        async for step, update in self._steps(self._start(image_path, **options), progress=progress):
            if step == "done":
                outcome = self.outcome(update)
                yield "done", {"prediction": outcome.prediction, "trace": outcome.trace, "summary": outcome.summary}
            else:
                yield step, update

    async def _steps(
        self, start: dict[str, Any], *, progress: bool = False
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``(step, update)`` per node as it finishes (``update["event"]``: its TraceEvent), then
        ``("done", the final state)``; with ``progress``, ``("progress", ...)`` while steps run."""
        final: dict[str, Any] | None = None
        modes = ["updates", "values", "custom"] if progress else ["updates", "values"]
        async for mode, chunk in self.graph.astream(start, context=self.resources, stream_mode=modes):
            if mode == "values":
                final = chunk
                continue
            if mode == "custom":
                if isinstance(chunk, ProgressEvent):
                    yield "progress", {"progress": chunk}
                continue
            for step, update in chunk.items():
                update = dict(update or {})
                events = update.pop("events", [])
                yield step, {"event": events[0] if events else None, **update}
        if final is None or "prediction" not in final:  # pragma: no cover - the graph always ends in decide
            raise RuntimeError("the locate graph ended without a prediction")
        yield "done", final

    def outcome(self, final: dict[str, Any]) -> LocateOutcome:
        reasoning = final.get("reasoning")
        prediction = final["prediction"]
        trace = Trace(
            trace_id=final["trace_id"],
            image=final["image_ref"],
            config_hash=self.resources.config.config_hash(),
            models=self.resources.model_ids(),
            events=final.get("events", []),
            prompts=list(reasoning.prompts) if reasoning is not None else [],
            prediction=prediction,
        )
        summary = RunSummary(
            prediction=prediction,
            candidates=list(final.get("ranked", [])),
            rejected=list(final.get("rejected", [])),
            hypotheses=list(reasoning.hypotheses) if reasoning is not None else [],
            reasoning_failures=list(reasoning.failures) if reasoning is not None else [],
            abstentions=list(reasoning.abstentions) if reasoning is not None else [],
            constraints=[c.label for c in final.get("constraints", [])],
            reused_answers=reasoning is not None and final.get("prior_reasoning") is not None,
        )
        return LocateOutcome(prediction=prediction, trace=trace, reasoning=reasoning, summary=summary)
