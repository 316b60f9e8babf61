"""The decide stage: from the fusion's clusters to one Prediction.

The answer is the centre of the cluster with the most mass (:mod:`geosleuth.agent.fusion`), not the
cluster of the single best-scoring candidate. ``Prediction.levels`` are that cluster's calibrated
per-level probabilities and ``Prediction.confidence`` is its ``within_25km`` (the calibrated
probability that the answer is within 25 km of the truth). ``alternatives`` are the leading
candidates of the ``top_k`` heaviest clusters, the winner's first, each with its cluster's
``within_25km``: the answer's confidence is never below an alternative's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from geosleuth.agent.fusion import candidate_key, spherical_mean
from geosleuth.agent.verify import Verification
from geosleuth.config import VerifyConfig
from geosleuth.geo import fold_name, haversine_km
from geosleuth.types import Candidate, Clue, Hypothesis, ImageRef, Prediction, StepFailure

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder

MAX_CLUES = 8

__all__ = ["MAX_CLUES", "decide", "spherical_mean", "supporting_clues"]


def decide(
    verification: Verification,
    *,
    image: ImageRef,
    hypotheses: Sequence[Hypothesis],
    geocoder: ReverseGeocoder,
    config: VerifyConfig,
    top_k: int,
    sources_used: Sequence[str],
    failures: Sequence[StepFailure] = (),
    no_candidate_reason: str = "no source proposed a candidate location",
) -> Prediction:
    """The prediction for ``image``; lat/lon None with ``no_candidate_reason`` when nothing was ranked."""
    evidence = verification.evidence
    if not verification.ranked or evidence is None or not evidence.clusters:
        return Prediction(
            image=image,
            sources_used=list(sources_used),
            failures=list(failures),
            failure_reason=no_candidate_reason,
            evidence=evidence,
        )
    by_mass = sorted(range(len(evidence.clusters)), key=lambda k: -evidence.clusters[k].log_mass)
    winner = evidence.clusters[by_mass[0]]
    by_key = {candidate_key(c): c for c in verification.ranked}
    alternatives: list[Candidate] = []
    for k in by_mass[: max(top_k, 1)]:
        cluster = evidence.clusters[k]
        lead = by_key[cluster.members[0]].model_copy(deep=True)
        lead.confidence = cluster.levels.within_25km if cluster.levels else 0.0
        alternatives.append(lead)
    levels = winner.levels
    return Prediction(
        image=image,
        lat=winner.lat,
        lon=winner.lon,
        place=winner.place or geocoder.lookup(winner.lat, winner.lon),
        confidence=levels.within_25km if levels else None,
        levels=levels,
        alternatives=alternatives,
        clues=supporting_clues(hypotheses, winner.lat, winner.lon, config.support_radius_km),
        sources_used=list(sources_used),
        failures=list(failures),
        evidence=evidence,
    )


def supporting_clues(hypotheses: Sequence[Hypothesis], lat: float, lon: float, radius_km: float) -> list[Clue]:
    """Clues of the VLM answers within ``radius_km`` of the answer, most confident first, no repeats."""
    near = [h for h in hypotheses if float(haversine_km(h.lat, h.lon, lat, lon)) <= radius_km]
    clues: list[Clue] = []
    seen: set[str] = set()
    for hypothesis in sorted(near, key=lambda h: -h.confidence):
        for clue in hypothesis.clues:
            key = fold_name(clue.observation)
            if key and key not in seen:
                seen.add(key)
                clues.append(clue)
    return clues[:MAX_CLUES]
