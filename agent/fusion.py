"""One probabilistic model of the evidence: per-source densities on the sphere, pooled log-linearly.

Every source turns what it saw into a probability density over the Earth's surface (per km^2):

- ``gallery``: the retrieved gallery neighbours, item weight ``exp(sharpness * similarity)``;
- ``geoclip``: GeoCLIP's own likelihood over its GPS-gallery candidates, ``exp(logit_scale * cos)``
  (its softmax, with its logit scale);
- ``vlm-zero-shot`` and ``vlm-informed``: the VLM's answers from prompts that showed no retrieved
  coordinate, and from prompts that did, kept apart so that agreement between the two counts as
  agreement between independent views. Item weight ``floor + stated confidence``, scaled down when
  the stated country contradicts the coordinate (``verify.w_geo_consistency``). An answer that
  repeats a coordinate shown in its own prompt (an echo) is no evidence at all.

A source's density is ``(1 - miss) * sum_i w_i * K_i + miss / area_of_earth``: its items' weights
(normalised to 1) spread over a disc of the cluster radius around each item (a flat kernel K), plus
a uniform part for the chance that the truth is near none of them. User constraints are hard masks:
evidence and candidates outside them are dropped (an answer outside a constraint never supports
anything), and the uniform parts only cover the allowed area.

The pooled density is ``prod_s density_s ** weight_s`` (a product of experts: independent evidence
multiplies). Every candidate is scored under this same model at its own location, with its own item
left out, so no candidate counts as support for itself (``Candidate.scores``: log10 density per
source; ``Candidate.score``: the pooled log10 density).

Decision: candidates are clustered greedily on the sphere (best score first; a cluster takes the
unassigned candidates within the cluster radius of its lead). A cluster's mass is the pooled density
integrated over its disc, with each source's items assigned to the nearest cluster lead; the rest of
the allowed area is one more cell, "elsewhere". Masses are normalised over clusters + elsewhere into
the model's posterior, and the answer is the heaviest cluster's refined centre: the member where the
pooled evidence is densest within 2 km (a mode, so an exact answer is not averaged away), or the
tied members' mean position when none stands out. Adding far-away weak candidates adds cells of about the
elsewhere density, so it changes neither the answer nor its posterior.

Raw per-level probabilities of a cluster (then calibrated, :mod:`geosleuth.agent.confidence`):
within_25km = its own posterior; within_200km = the posterior of the clusters within 200 km;
country / region / city = the posterior of the clusters in the same country / region / city.
Weights and miss rates come from the calibration file; ``verify.w_*`` scale the weights (0 = off).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from geosleuth.agent.confidence import GALLERY, GEOCLIP, SOURCES, VLM_INFORMED, VLM_ZERO_SHOT, Calibration
from geosleuth.geo import haversine_km
from geosleuth.types import Candidate, ClusterEvidence, FusionEvidence, Place, SourceEvidence

EARTH_RADIUS_KM = 6371.0088
EARTH_AREA_KM2 = 4.0 * np.pi * EARTH_RADIUS_KM**2
MIN_RADIUS_KM = 1.0
# The answer is the point of its cluster where the evidence is densest at this finer scale: an exact
# landmark answer stays exact instead of being averaged with everything within the cluster radius.
REFINE_BANDWIDTH_KM = 2.0  # a cluster radius of 0 (every coordinate its own place) still credits a 1 km disc
WITHIN_200_KM = 200.0
_LOG10_TINY = -300.0


@dataclass(frozen=True)
class EvidenceItem:
    """One piece of evidence: a location a source vouches for, with an unnormalised weight.
    ``ref`` is the candidate key (``source:source_ref``) of the candidate at the same location,
    so that candidate's own item can be left out of its score."""

    source: str
    lat: float
    lon: float
    weight: float
    ref: str


@dataclass
class FusionResult:
    ranked: list[Candidate]  # inside every constraint: by cluster mass, then score; each with its cluster index
    evidence: FusionEvidence
    weights: dict[str, float] = field(default_factory=dict)  # the effective weight per source


def candidate_key(candidate: Candidate) -> str:
    return f"{candidate.source.value}:{candidate.source_ref}"


def cap_area_km2(radius_km: float) -> float:
    """Area of a spherical cap (a disc on the sphere) of ``radius_km``."""
    return float(2.0 * np.pi * EARTH_RADIUS_KM**2 * (1.0 - np.cos(min(radius_km, np.pi * EARTH_RADIUS_KM)
                                                                    / EARTH_RADIUS_KM)))


def fibonacci_lattice(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` near-evenly spaced points on the sphere (lat, lon in degrees), deterministic."""
    i = np.arange(n) + 0.5
    lat = np.degrees(np.arcsin(1.0 - 2.0 * i / n))
    lon = (np.degrees(np.pi * (1.0 + 5.0**0.5) * i) + 180.0) % 360.0 - 180.0
    return lat, lon


def _normalised(items: list[EvidenceItem]) -> list[EvidenceItem]:
    """Weights summing to 1 (all zero: all stay zero, and such items support nothing)."""
    total = sum(item.weight for item in items)
    return [EvidenceItem(i.source, i.lat, i.lon, i.weight / total if total > 0 else 0.0, i.ref) for i in items]


def _distances(lat_a: np.ndarray, lon_a: np.ndarray, lat_b: np.ndarray, lon_b: np.ndarray) -> np.ndarray:
    return np.asarray(haversine_km(lat_a[:, None], lon_a[:, None], lat_b[None, :], lon_b[None, :]))


def _log10(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.maximum(np.log10(values), _LOG10_TINY)


def fuse(
    pool: Sequence[Candidate],
    items: Sequence[EvidenceItem],
    *,
    items_inside: Sequence[bool] | None = None,
    weights: dict[str, float],
    calibration: Calibration,
    cluster_radius_km: float,
    allowed_area_km2: float = EARTH_AREA_KM2,
    center_places: Callable[[Sequence[tuple[float, float]]], Sequence[Place | None]] | None = None,
) -> FusionResult:
    """Score ``pool`` (candidates already inside every constraint) under the pooled model, cluster
    it, and give every cluster its mass, posterior and calibrated levels.

    ``items``: every source's evidence (unnormalised weights, normalised here per source over all
    its items); ``items_inside``: which of them lie inside every constraint (the others are then
    dropped: they never support anything, and their mass is not handed to the items left).
    ``weights``: the effective log-linear weight per source (0 or absent = off).
    ``center_places``: reverse-geocodes the cluster centres (for the country/region/city levels).
    """
    radius = max(cluster_radius_km, MIN_RADIUS_KM)
    area = cap_area_km2(radius)
    keep = list(items_inside) if items_inside is not None else [True] * len(items)
    by_source = {
        s: [i for i, ok in zip(_normalised([i for i in items if i.source == s]),
                               [ok for i, ok in zip(items, keep, strict=True) if i.source == s], strict=True) if ok]
        for s in SOURCES
    }
    active = [s for s in SOURCES if weights.get(s, 0.0) > 0 and by_source[s]]
    miss = {s: calibration.fusion.sources[s].miss for s in SOURCES}
    floors = {s: float(np.log10(miss[s] / EARTH_AREA_KM2)) for s in active}
    candidates = [c.model_copy(deep=True) for c in pool]
    if not candidates:
        return FusionResult([], FusionEvidence(cluster_radius_km=cluster_radius_km, allowed_area_km2=allowed_area_km2,
                                               floors=floors, elsewhere_log_mass=0.0, elsewhere_posterior=1.0,
                                               calibration=calibration.label), weights=weights)

    c_lat = np.array([c.lat for c in candidates])
    c_lon = np.array([c.lon for c in candidates])
    keys = [candidate_key(c) for c in candidates]
    fine, with_self = _score(candidates, keys, {s: by_source[s] for s in active}, weights, miss, radius)
    members = _clusters(candidates, c_lat, c_lon, cluster_radius_km)
    leads = [group[0] for group in members]
    lead_lat, lead_lon = c_lat[leads], c_lon[leads]

    log_mass = np.full(len(leads), np.log10(area))
    per_source: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for source in active:
        src = by_source[source]
        d = _distances(np.array([i.lat for i in src]), np.array([i.lon for i in src]), lead_lat, lead_lon)
        nearest = d.argmin(axis=1)
        inside = d[np.arange(len(src)), nearest] <= radius
        w = np.array([i.weight for i in src])
        mass = np.bincount(nearest[inside], weights=w[inside], minlength=len(leads))
        count = np.bincount(nearest[inside], minlength=len(leads))
        log_density = _log_density(mass, miss[source], area)
        log_mass += weights[source] * log_density
        per_source[source] = (mass, count, log_density)
    rest = max(allowed_area_km2 - area * len(leads), area)
    elsewhere = float(np.log10(rest) + sum(weights[s] * floors[s] for s in active))
    shift = max(float(log_mass.max()), elsewhere)
    unnormalised = 10.0 ** (log_mass - shift)
    total = unnormalised.sum() + 10.0 ** (elsewhere - shift)
    posterior = unnormalised / total

    centres = [_centre(candidates, group, fine, with_self) for group in members]
    centre_places = center_places(centres) if center_places is not None else [None] * len(centres)
    raw = raw_levels(posterior, centres, centre_places)
    clusters = []
    for k, group in enumerate(members):
        sources = [
            SourceEvidence(source=s, items=int(per_source[s][1][k]), mass=float(min(per_source[s][0][k], 1.0)),
                           log_density=round(float(per_source[s][2][k]), 6), weight=weights[s])
            for s in active
        ]
        clusters.append(ClusterEvidence(
            lat=centres[k][0], lon=centres[k][1], area_km2=area, members=[keys[i] for i in group], sources=sources,
            log_mass=float(log_mass[k]), posterior=float(min(posterior[k], 1.0)), place=centre_places[k],
            levels=calibration.levels_for({level: values[k] for level, values in raw.items()}),
        ))
    by_mass = sorted(range(len(clusters)), key=lambda k: -clusters[k].log_mass)
    position = {k: rank for rank, k in enumerate(by_mass)}
    for k, group in enumerate(members):
        for i in group:
            candidates[i].cluster = position[k]
            candidates[i].confidence = clusters[k].levels.within_25km if clusters[k].levels else 0.0
    evidence = FusionEvidence(
        cluster_radius_km=cluster_radius_km, allowed_area_km2=allowed_area_km2, floors=floors,
        clusters=[clusters[k] for k in by_mass], elsewhere_log_mass=elsewhere,
        elsewhere_posterior=float(min(10.0 ** (elsewhere - shift) / total, 1.0)), calibration=calibration.label,
    )
    # Heaviest cluster first, then by score within it: ranked[0] leads the answer's cluster.
    ranked = sorted(candidates, key=lambda c: (c.cluster if c.cluster is not None else len(clusters), -c.score))
    return FusionResult(ranked, evidence, weights=weights)


def _log_density(mass: np.ndarray, miss: float, area_km2: float) -> np.ndarray:
    """log10 of a source's mean density over a disc holding ``mass`` of its kernel weight."""
    return _log10((1.0 - miss) * mass / area_km2 + miss / EARTH_AREA_KM2)


def _score(
    candidates: list[Candidate], keys: list[str], by_source: dict[str, list[EvidenceItem]],
    weights: dict[str, float], miss: dict[str, float], radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Set each candidate's per-source and pooled leave-one-out log densities; return the pooled
    densities with its own item included, at REFINE_BANDWIDTH_KM and at the cluster radius."""
    lat = np.array([c.lat for c in candidates])
    lon = np.array([c.lon for c in candidates])
    area = cap_area_km2(radius)
    fine_radius = min(radius, REFINE_BANDWIDTH_KM)
    fine_area = cap_area_km2(fine_radius)
    totals, with_self, fine = np.zeros(len(candidates)), np.zeros(len(candidates)), np.zeros(len(candidates))
    for source, src in by_source.items():
        w = np.array([i.weight for i in src])
        distance = _distances(lat, lon, np.array([i.lat for i in src]), np.array([i.lon for i in src]))
        near = distance <= radius
        own = np.array([[i.ref == key for i in src] for key in keys], dtype=bool)
        log_density = _log_density(((near & ~own) * w[None, :]).sum(axis=1), miss[source], area)
        totals += weights[source] * log_density
        with_self += weights[source] * _log_density((near * w[None, :]).sum(axis=1), miss[source], area)
        fine += weights[source] * _log_density(((distance <= fine_radius) * w[None, :]).sum(axis=1), miss[source],
                                               fine_area)
        for candidate, value in zip(candidates, log_density, strict=True):
            candidate.scores[source] = round(float(value), 6)
    for candidate, total in zip(candidates, totals, strict=True):
        candidate.score = float(total)
    return fine, with_self


def _clusters(candidates: list[Candidate], lat: np.ndarray, lon: np.ndarray, radius_km: float) -> list[list[int]]:
    """Greedy clusters, best score first: each takes the unassigned candidates within ``radius_km``
    of its lead (its first index)."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
    unassigned = np.ones(len(candidates), dtype=bool)
    members: list[list[int]] = []
    for i in order:
        if not unassigned[i]:
            continue
        near = unassigned & (np.asarray(haversine_km(lat[i], lon[i], lat, lon)) <= radius_km)
        near[i] = True
        group = [i] + [j for j in order if near[j] and j != i]
        unassigned[group] = False
        members.append(group)
    return members


def _centre(
    candidates: Sequence[Candidate], group: list[int], fine: np.ndarray, coarse: np.ndarray
) -> tuple[float, float]:
    """The refined answer of a cluster: the member where the pooled evidence (own item included) is
    densest within REFINE_BANDWIDTH_KM; ties go to the denser within the cluster radius, then to
    the members' mean position on the sphere when several stay tied (no member stands out)."""
    best = max(fine[i] for i in group)
    tied = [i for i in group if fine[i] >= best - 1e-9]
    top = max(coarse[i] for i in tied)
    tied = [i for i in tied if coarse[i] >= top - 1e-9]
    if len(tied) == 1:
        return candidates[tied[0]].lat, candidates[tied[0]].lon
    return spherical_mean([candidates[i].lat for i in tied], [candidates[i].lon for i in tied], [1.0] * len(tied))


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
    if norm < 1e-9:  # points cancel out (antipodal): no meaningful mean, keep the first one
        return float(lats[0]), float(lons[0])
    x, y, z = mean / norm
    out_lat = float(np.degrees(np.arcsin(np.clip(z, -1.0, 1.0))))
    out_lon = float(np.degrees(np.arctan2(y, x)))
    return out_lat, ((out_lon + 180.0) % 360.0) - 180.0


def rescore(
    evidence: FusionEvidence, weights: dict[str, float], miss: dict[str, float]
) -> tuple[np.ndarray, float, np.ndarray]:
    """The clusters' log10 masses, the elsewhere log10 mass and the posterior (clusters, then
    elsewhere) of a recorded fusion under other source weights and miss rates: what calibration
    fits. The clustering and each source's mass per cluster stay as recorded."""
    clusters = evidence.clusters
    active = sorted({s.source for c in clusters for s in c.sources})
    log_mass = np.array([np.log10(c.area_km2) for c in clusters], dtype=np.float64)
    for k, cluster in enumerate(clusters):
        for item in cluster.sources:
            log_density = _log_density(np.array(item.mass), miss[item.source], cluster.area_km2)
            log_mass[k] += weights[item.source] * float(log_density)
    rest = max(evidence.allowed_area_km2 - sum(c.area_km2 for c in clusters), min((c.area_km2 for c in clusters),
                                                                                   default=1.0))
    elsewhere = float(np.log10(rest) + sum(weights[s] * np.log10(miss[s] / EARTH_AREA_KM2) for s in active))
    every = np.append(log_mass, elsewhere)
    posterior = 10.0 ** (every - every.max())
    return log_mass, elsewhere, posterior / posterior.sum()


def raw_levels(
    posterior: np.ndarray, centres: Sequence[tuple[float, float]], places: Sequence[Place | None]
) -> dict[str, np.ndarray]:
    """Each cluster's raw model probability per level (module docstring)."""
    lat = np.array([c[0] for c in centres])
    lon = np.array([c[1] for c in centres])
    near = _distances(lat, lon, lat, lon) <= WITHIN_200_KM

    def same(key: tuple[str | None, ...] | None, other: tuple[str | None, ...] | None) -> bool:
        return key is not None and key == other

    def keys(depth: int) -> list[tuple[str | None, ...] | None]:
        out: list[tuple[str | None, ...] | None] = []
        for place in places:
            if place is None or not place.country_code:
                out.append(None)
            else:
                out.append((place.country_code, place.admin1 or "", place.city or "")[:depth])
        return out

    raw = {"within_25km": posterior.copy(), "within_200km": (near * posterior[None, :]).sum(axis=1)}
    for level, depth in (("country", 1), ("region", 2), ("city", 3)):
        k = keys(depth)
        raw[level] = np.array([
            sum(posterior[j] for j in range(len(k)) if j == i or same(k[i], k[j])) for i in range(len(k))
        ])
    return {level: np.clip(values, 0.0, 1.0) for level, values in raw.items()}


def allowed_area_km2(inside_lattice: np.ndarray, circle_radii_km: Sequence[float] = ()) -> float:
    """The area inside the user's constraints, from which lattice points (see
    :func:`fibonacci_lattice`) lie inside; a circle constraint bounds it by its exact area."""
    share = float(np.mean(inside_lattice)) if len(inside_lattice) else 1.0
    area = share * EARTH_AREA_KM2
    if circle_radii_km:
        exact = min(cap_area_km2(r) for r in circle_radii_km)
        area = exact if area == 0 else min(area, exact)
    return max(area, EARTH_AREA_KM2 / max(len(inside_lattice), 1) if area == 0 else area)


def source_of_hypothesis(shown_coordinates: int) -> str:
    """Zero-shot answers (their prompt showed no retrieved coordinate) vs retrieval-informed ones."""
    return VLM_ZERO_SHOT if shown_coordinates == 0 else VLM_INFORMED


__all__ = [
    "EARTH_AREA_KM2", "GALLERY", "GEOCLIP", "VLM_INFORMED", "VLM_ZERO_SHOT", "EvidenceItem", "FusionResult",
    "allowed_area_km2", "candidate_key", "cap_area_km2", "fibonacci_lattice", "fuse", "raw_levels", "rescore",
    "source_of_hypothesis", "spherical_mean",
]
