"""The verify stage: pool every candidate location, score each on independent evidence, rank.

Candidate pool: gallery-neighbour coordinates, GPS-gallery candidates, VLM hypotheses, and the
centre of any "within N km of PLACE" user constraint.

Component scores, each in [0, 1] (``Candidate.scores``; a component is absent from a candidate's
scores when it is off or does not apply to it):

- ``geoclip``: GeoCLIP image-location similarity. Cosine similarities ``s`` between the image's
  GeoCLIP embedding and each candidate's location embedding become ``exp(logit_scale * (s - max s))``:
  GeoCLIP's own softmax, relative to the pool's best candidate (which gets 1). Relative to the best,
  not summed over the pool, so ten copies of one place do not dilute each other. Needs a GeoCLIP
  embedding (an image encoder with the GeoCLIP head) and a location encoder.
- ``neighbor_support``: similarity-weighted fraction of the retrieved gallery neighbours within
  ``support_radius_km`` (haversine) of the candidate. Needs an image gallery.
- ``vlm_agreement``: fraction of all VLM hypotheses within ``support_radius_km``. Needs hypotheses.
- ``geo_consistency``: VLM candidates only: does the country (else continent) the answer states
  match the reverse-geocoded place of its own coordinate (1 = country and region match, 0.75 =
  country matches but the stated region does not, 0.25 = only the continent matches, 0 = neither).
  Not applicable to other candidates (they state no place) nor to answers stating none.

A candidate's score is the weighted mean of the components that apply to it (weights in
``config.verify``; weight 0 turns a component off everywhere, for ablations).
``config.verify.candidate_sources`` limits which sources' locations enter the pool (the answer is
one of them); the other sources' neighbours and answers still count as support and agreement.
Candidates outside a user constraint are rejected (kept for the trace, never ranked).
``confidence`` is each candidate's share of the ranked pool's total score (sums to 1): with GeoCLIP
alone that is GeoCLIP's own softmax over the pool; a sharper softmax of the scores would claim
certainty the evidence does not give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from geosleuth.agent.state import Constraint, contains_all
from geosleuth.config import VerifyConfig
from geosleuth.errors import ConfigError
from geosleuth.geo import CONTINENT_NAMES, fold_name, haversine_km
from geosleuth.types import Candidate, CandidateSource, Hypothesis, Place, RetrievalResult

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder
    from geosleuth.index.encoders import LocationEncoder

GEOCLIP = "geoclip"
NEIGHBOR_SUPPORT = "neighbor_support"
VLM_AGREEMENT = "vlm_agreement"
GEO_CONSISTENCY = "geo_consistency"
COMPONENTS = (GEOCLIP, NEIGHBOR_SUPPORT, VLM_AGREEMENT, GEO_CONSISTENCY)

_CONTINENT_BY_NAME = {
    **{name.lower(): name for name in CONTINENT_NAMES.values()},
    **{code.lower(): name for code, name in CONTINENT_NAMES.items()},
    "australia": "Oceania",
    "australasia": "Oceania",
    "oceania": "Oceania",
}


@dataclass(frozen=True)
class Verification:
    """What verification decided: ranked candidates, rejected ones, and which components ran."""

    ranked: list[Candidate]  # inside every constraint, best first; confidences sum to 1
    rejected: list[Candidate] = field(default_factory=list)  # outside a user constraint, scored
    components: dict[str, str] = field(default_factory=dict)  # name -> "on" / "off: ..." / "not applicable: ..."


def weights_of(config: VerifyConfig) -> dict[str, float]:
    return {
        GEOCLIP: config.w_geoclip,
        NEIGHBOR_SUPPORT: config.w_neighbor_support,
        VLM_AGREEMENT: config.w_vlm_agreement,
        GEO_CONSISTENCY: config.w_geo_consistency,
    }


def candidate_pool(
    retrieval: RetrievalResult,
    hypotheses: Sequence[Hypothesis],
    constraints: Sequence[Constraint] = (),
    *,
    sources: Sequence[str] | None = None,
) -> list[Candidate]:
    """Every location any source proposed, in source order (gallery, GPS gallery, VLM, user);
    ``sources`` (CandidateSource values, e.g. ``["vlm"]``) keeps only those sources' candidates."""
    pool = [
        Candidate(lat=n.lat, lon=n.lon, source=CandidateSource.RETRIEVAL, source_ref=n.id, place=n.place)
        for n in retrieval.neighbors
    ]
    pool += [
        Candidate(lat=g.lat, lon=g.lon, source=CandidateSource.GPS_GALLERY, source_ref=f"gps-{i}")
        for i, g in enumerate(retrieval.gps_candidates)
    ]
    pool += [
        Candidate(lat=h.lat, lon=h.lon, source=CandidateSource.VLM, source_ref=f"{h.variant}#{h.sample_index}")
        for h in hypotheses
    ]
    pool += [
        Candidate(lat=c.lat, lon=c.lon, source=CandidateSource.USER, source_ref=c.label)
        for c in constraints
        if c.kind == "circle" and c.lat is not None and c.lon is not None
    ]
    if sources is not None:
        pool = [c for c in pool if c.source.value in sources]
    return pool


def verify(
    retrieval: RetrievalResult,
    hypotheses: Sequence[Hypothesis],
    *,
    geoclip_embedding: np.ndarray | None,
    location_encoder: LocationEncoder | None,
    geocoder: ReverseGeocoder,
    config: VerifyConfig,
    constraints: Sequence[Constraint] = (),
) -> Verification:
    """Score and rank the candidate pool (see the module docstring for the scores)."""
    weights = weights_of(config)
    if not any(w > 0 for w in weights.values()):
        raise ConfigError(
            "every verification weight is 0 (verify.w_geoclip, w_neighbor_support, w_vlm_agreement, "
            "w_geo_consistency): turn at least one on"
        )
    pool = candidate_pool(retrieval, hypotheses, constraints, sources=config.candidate_sources)
    vlm_rows = [i for i, c in enumerate(pool) if c.source == CandidateSource.VLM]
    components = _component_status(weights, retrieval, hypotheses, geoclip_embedding, location_encoder)
    if not pool:
        return Verification(ranked=[], components=components)

    missing = [c for c in pool if c.place is None]
    for candidate, place in zip(missing, geocoder.lookup_many([(c.lat, c.lon) for c in missing]), strict=True):
        candidate.place = place
    lat = np.array([c.lat for c in pool])
    lon = np.array([c.lon for c in pool])
    radius = config.support_radius_km

    per_component: dict[str, np.ndarray] = {}  # NaN = not applicable to that candidate
    if components[GEOCLIP] == "on":
        assert geoclip_embedding is not None and location_encoder is not None
        per_component[GEOCLIP] = geoclip_scores(geoclip_embedding, lat, lon, location_encoder)
    if components[NEIGHBOR_SUPPORT] == "on":
        per_component[NEIGHBOR_SUPPORT] = neighbor_support(lat, lon, retrieval, radius)
    if components[VLM_AGREEMENT] == "on":
        per_component[VLM_AGREEMENT] = vlm_agreement(lat, lon, hypotheses, radius)
    if components[GEO_CONSISTENCY] == "on":
        consistency = np.full(len(pool), np.nan)
        # VLM answers left out of the pool (verify.candidate_sources) have no row to score.
        for row, hypothesis in zip(vlm_rows, hypotheses if vlm_rows else (), strict=True):
            place = pool[row].place
            assert place is not None
            value = geo_consistency(hypothesis, place, geocoder)
            consistency[row] = np.nan if value is None else value
        per_component[GEO_CONSISTENCY] = consistency

    for i, candidate in enumerate(pool):
        total = weight_sum = 0.0
        for name, values in per_component.items():
            value = float(values[i])
            if np.isnan(value):
                continue
            candidate.scores[name] = value
            total += weights[name] * value
            weight_sum += weights[name]
        candidate.score = total / weight_sum if weight_sum > 0 else 0.0

    inside = contains_all(constraints, lat, lon, geocoder)
    ranked = sorted((c for c, keep in zip(pool, inside, strict=True) if keep), key=lambda c: -c.score)
    rejected = [c for c, keep in zip(pool, inside, strict=True) if not keep]
    if ranked:
        scores = np.array([c.score for c in ranked])
        shares = scores / scores.sum() if scores.sum() > 0 else np.full(len(ranked), 1.0 / len(ranked))
        for candidate, share in zip(ranked, shares, strict=True):
            candidate.confidence = float(share)
    return Verification(ranked=ranked, rejected=rejected, components=components)


def _component_status(
    weights: dict[str, float],
    retrieval: RetrievalResult,
    hypotheses: Sequence[Hypothesis],
    geoclip_embedding: np.ndarray | None,
    location_encoder: LocationEncoder | None,
) -> dict[str, str]:
    unavailable = {
        GEOCLIP: (
            "no GeoCLIP embedding for this image (the image encoder has no GeoCLIP head)"
            if geoclip_embedding is None
            else ("no location encoder" if location_encoder is None else None)
        ),
        NEIGHBOR_SUPPORT: (
            None if retrieval.neighbors else "no gallery neighbours (no image gallery configured, or it returned none)"
        ),
        VLM_AGREEMENT: None if hypotheses else "no VLM hypotheses",
        GEO_CONSISTENCY: None if hypotheses else "no VLM hypotheses (applies to VLM candidates only)",
    }
    status: dict[str, str] = {}
    for name in COMPONENTS:
        if weights[name] <= 0:
            status[name] = "off: weight 0"
        elif unavailable[name]:
            status[name] = f"not applicable: {unavailable[name]}"
        else:
            status[name] = "on"
    return status


def geoclip_scores(
    geoclip_embedding: np.ndarray, lat: np.ndarray, lon: np.ndarray, location_encoder: LocationEncoder
) -> np.ndarray:
    """``exp(logit_scale * (cos - max cos))`` per coordinate: 1 for the best, GeoCLIP's likelihood
    ratio to the best for the rest."""
    from geosleuth.index.gps_gallery import score_locations

    latlon = np.stack([lat, lon], axis=1)
    sims = np.asarray(score_locations(geoclip_embedding, latlon, location_encoder), dtype=np.float64)
    return np.exp(location_encoder.logit_scale * (sims - sims.max()))


def neighbor_support(lat: np.ndarray, lon: np.ndarray, retrieval: RetrievalResult, radius_km: float) -> np.ndarray:
    """Similarity-weighted fraction of gallery neighbours within ``radius_km`` of each coordinate."""
    neighbors = retrieval.neighbors
    n_lat = np.array([n.lat for n in neighbors])
    n_lon = np.array([n.lon for n in neighbors])
    weight = np.clip(np.array([n.similarity for n in neighbors], dtype=np.float64), 0.0, None)
    if weight.sum() <= 0:  # all similarities <= 0: count neighbours equally
        weight = np.ones(len(neighbors))
    near = haversine_km(lat[:, None], lon[:, None], n_lat[None, :], n_lon[None, :]) <= radius_km
    return (near * weight[None, :]).sum(axis=1) / weight.sum()


def vlm_agreement(lat: np.ndarray, lon: np.ndarray, hypotheses: Sequence[Hypothesis], radius_km: float) -> np.ndarray:
    """Fraction of VLM hypotheses within ``radius_km`` of each coordinate."""
    h_lat = np.array([h.lat for h in hypotheses])
    h_lon = np.array([h.lon for h in hypotheses])
    near = haversine_km(lat[:, None], lon[:, None], h_lat[None, :], h_lon[None, :]) <= radius_km
    return near.mean(axis=1)


def geo_consistency(hypothesis: Hypothesis, place: Place, geocoder: ReverseGeocoder) -> float | None:
    """Does the place the answer states match where its coordinate is? None when it states none."""
    stated_code = (hypothesis.country_code or geocoder.country_code(hypothesis.country) or "").upper() or None
    if stated_code and place.country_code:
        if stated_code == place.country_code.upper():
            if hypothesis.region and place.admin1 and not _same_name(hypothesis.region, place.admin1):
                return 0.75
            return 1.0
        stated_continent = geocoder.continent_of(stated_code)
        return 0.25 if stated_continent and stated_continent == place.continent else 0.0
    continent = continent_name(hypothesis.continent)
    if continent and place.continent:
        return 1.0 if continent == place.continent else 0.0
    return None


def continent_name(text: str | None) -> str | None:
    """'south america' / 'SA' / 'Australia' -> the GeoNames continent name used in Place; else None."""
    return _CONTINENT_BY_NAME.get(fold_name(text)) if text else None


def _same_name(a: str, b: str) -> bool:
    """'Provence' vs 'Provence-Alpes-Cote d'Azur': one folded name contains the other."""
    fa, fb = fold_name(a), fold_name(b)
    return bool(fa and fb) and (fa in fb or fb in fa)
