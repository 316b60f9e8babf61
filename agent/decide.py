"""The decide stage: from ranked candidates to one Prediction.

Candidates are grouped greedily in rank order: the best remaining candidate opens a cluster and
takes every unassigned candidate within ``refine_radius_km``. The answer is the top cluster's
score-weighted mean position, computed on the sphere (unit vectors, so clusters across the
antimeridian or near a pole average correctly); with ``refine_radius_km = 0`` it is the top
candidate itself. A cluster's confidence is the sum of its members' confidences (they sum to 1 over
the pool), so ``Prediction.confidence`` reads "probability mass within the winner's cluster".
``alternatives`` are the best ``top_k`` clusters' leading candidates, the winner's first, each
with its cluster's confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from geosleuth.config import VerifyConfig
from geosleuth.geo import fold_name, haversine_km
from geosleuth.types import Candidate, Clue, Hypothesis, ImageRef, Prediction, StepFailure

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder

MAX_CLUES = 8


def decide(
    ranked: Sequence[Candidate],
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
    """The prediction for ``image``; lat/lon None with ``no_candidate_reason`` when ``ranked`` is empty."""
    if not ranked:
        return Prediction(
            image=image,
            sources_used=list(sources_used),
            failures=list(failures),
            failure_reason=no_candidate_reason,
        )
    clusters = cluster_candidates(ranked, config.refine_radius_km)
    winner = clusters[0]
    if len(winner) > 1 and config.refine_radius_km > 0:
        members = [ranked[i] for i in winner]
        lat, lon = spherical_mean(
            [c.lat for c in members], [c.lon for c in members], [c.score for c in members]
        )
    else:
        lat, lon = ranked[0].lat, ranked[0].lon
    alternatives = []
    for members in clusters[: max(top_k, 1)]:
        lead = ranked[members[0]].model_copy(deep=True)
        lead.confidence = float(sum(ranked[i].confidence for i in members))
        alternatives.append(lead)
    return Prediction(
        image=image,
        lat=lat,
        lon=lon,
        place=geocoder.lookup(lat, lon),
        confidence=alternatives[0].confidence,
        alternatives=alternatives,
        clues=supporting_clues(hypotheses, lat, lon, config.support_radius_km),
        sources_used=list(sources_used),
        failures=list(failures),
    )


def cluster_candidates(ranked: Sequence[Candidate], radius_km: float) -> list[list[int]]:
    """Greedy clusters of indices into ``ranked`` (best first); each cluster's first index leads it."""
    lat = np.array([c.lat for c in ranked])
    lon = np.array([c.lon for c in ranked])
    unassigned = np.ones(len(ranked), dtype=bool)
    clusters: list[list[int]] = []
    for i in range(len(ranked)):
        if not unassigned[i]:
            continue
        near = unassigned & (haversine_km(lat[i], lon[i], lat, lon) <= radius_km)
        near[i] = True
        members = [i] + [int(j) for j in np.flatnonzero(near) if j != i]
        unassigned[members] = False
        clusters.append(members)
    return clusters


def spherical_mean(lats: Sequence[float], lons: Sequence[float], weights: Sequence[float]) -> tuple[float, float]:
    """Weighted mean position on the sphere (via 3-D unit vectors); equal weights if all are <= 0."""
    lat = np.radians(np.asarray(lats, dtype=np.float64))
    lon = np.radians(np.asarray(lons, dtype=np.float64))
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if w.sum() <= 0:
        w = np.ones_like(lat)
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    mean = (xyz * w[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-9:  # points cancel out (antipodal): no meaningful mean, keep the best one
        return float(lats[0]), float(lons[0])
    x, y, z = mean / norm
    out_lat = float(np.degrees(np.arcsin(np.clip(z, -1.0, 1.0))))
    out_lon = float(np.degrees(np.arctan2(y, x)))
    return out_lat, ((out_lon + 180.0) % 360.0) - 180.0


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
