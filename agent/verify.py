"""The verify stage: pool every candidate location and score it under one evidence model.

Candidate pool: gallery-neighbour coordinates, GPS-gallery candidates, VLM hypotheses, places named
in the photo's text, the centre of any "within N km of PLACE" user constraint, and locations the VLM's
tool calls proposed (``extra_candidates``: judged, not counted as evidence). The scoring,
clustering and per-cluster mass live in :mod:`geosleuth.agent.fusion` (read its docstring for the
model); this module gathers the evidence into it:

- gallery neighbours (``gallery``), weighted by similarity;
- GPS-gallery candidates (``geoclip``), weighted by GeoCLIP's softmax: cosine similarities between
  the image's GeoCLIP embedding and each candidate's location embedding (recomputed with the
  location encoder when there is one), times the encoder's logit scale;
- VLM answers, zero-shot and retrieval-informed apart (``vlm-zero-shot``, ``vlm-informed``),
  weighted by stated confidence and by ``geo_consistency`` (does the stated country, else continent,
  match the reverse-geocoded place of the coordinate); echoes (``Hypothesis.echo_of``) are dropped;
- the text read in the photo: places it names (``ocr-place``, weighted by match similarity x the
  place's share of its name x the recogniser's confidence in the line) and its language as a soft
  country prior (``ocr-language``: the likeliest countries' largest places, weighted by
  P(country | language) x population share). Never a filter: a wrong reading is outweighed.

``config.verify.w_*`` scale the calibrated source weights (``w_neighbor_support`` -> gallery,
``w_geoclip`` -> geoclip, ``w_vlm_agreement`` -> both VLM sources, ``w_text`` -> both text sources;
0 turns a source off, for ablations); ``w_geo_consistency`` is how strongly a contradicting answer is
down-weighted (0..1).
``config.verify.candidate_sources`` limits which sources' locations may be the answer; the others
still count as evidence. Candidates and evidence outside a user constraint are dropped (the
candidates are kept for the trace, never ranked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from geosleuth.agent.confidence import (
    GALLERY,
    GEOCLIP,
    OCR_LANGUAGE,
    OCR_PLACE,
    SOURCES,
    VLM_INFORMED,
    VLM_ZERO_SHOT,
    Calibration,
)
from geosleuth.agent.fusion import (
    EARTH_AREA_KM2,
    EvidenceItem,
    allowed_area_km2,
    candidate_key,
    fibonacci_lattice,
    fuse,
    source_of_hypothesis,
)
from geosleuth.config import VerifyConfig
from geosleuth.constraints import Constraint, contains_all
from geosleuth.errors import ConfigError
from geosleuth.geo import CONTINENT_NAMES, fold_name
from geosleuth.types import (
    Candidate,
    CandidateSource,
    FusionEvidence,
    Hypothesis,
    Place,
    RetrievalResult,
    TextEvidence,
)

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder
    from geosleuth.index.encoders import LocationEncoder

# GeoCLIP's shipped logit scale (exp(3.681)), used when no location encoder gives its own.
GEOCLIP_LOGIT_SCALE = 39.7
# Lattice points used to measure the area inside a user constraint (about 25,000 km^2 each).
AREA_LATTICE_POINTS = 20_000

_CONTINENT_BY_NAME = {
    **{name.lower(): name for name in CONTINENT_NAMES.values()},
    **{code.lower(): name for code, name in CONTINENT_NAMES.items()},
    "australia": "Oceania",
    "australasia": "Oceania",
    "oceania": "Oceania",
}


@dataclass(frozen=True)
class Verification:
    """What verification decided: scored candidates, rejected ones, the clusters and their evidence."""

    ranked: list[Candidate]  # inside every constraint, best score first
    rejected: list[Candidate] = field(default_factory=list)  # outside a user constraint
    components: dict[str, str] = field(default_factory=dict)  # source -> "on" / "off: ..." / "not applicable: ..."
    evidence: FusionEvidence | None = None  # clusters heaviest first; None when the pool is empty


def weights_of(config: VerifyConfig, calibration: Calibration | None = None) -> dict[str, float]:
    """The effective log-linear weight per source: calibrated weight x the config's switch."""
    fitted = calibration.fusion.sources if calibration is not None else None
    switch = {
        GALLERY: config.w_neighbor_support,
        GEOCLIP: config.w_geoclip,
        VLM_ZERO_SHOT: config.w_vlm_agreement,
        VLM_INFORMED: config.w_vlm_agreement,
        OCR_PLACE: config.w_text,
        OCR_LANGUAGE: config.w_text,
    }
    return {s: switch[s] * (fitted[s].weight if fitted is not None else 1.0) for s in SOURCES}


def candidate_pool(
    retrieval: RetrievalResult,
    hypotheses: Sequence[Hypothesis],
    constraints: Sequence[Constraint] = (),
    *,
    sources: Sequence[str] | None = None,
    text: TextEvidence | None = None,
    extra: Sequence[Candidate] = (),
) -> list[Candidate]:
    """Every location any source proposed, in source order (gallery, GPS gallery, VLM, user, text,
    then ``extra``); ``sources`` (CandidateSource values, e.g. ``["vlm"]``) keeps only those sources'
    candidates. ``extra``: candidates proposed elsewhere (the VLM's tool calls), judged like the rest;
    one whose key (``source:source_ref``) is already in the pool is the same candidate and is skipped."""
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
    if text is not None:
        pool += [
            Candidate(lat=m.lat, lon=m.lon, source=CandidateSource.OCR, source_ref=ocr_ref(m.geonameid))
            for m in text.places
        ]
    seen = {candidate_key(c) for c in pool}
    for candidate in extra:
        if candidate_key(candidate) not in seen:
            seen.add(candidate_key(candidate))
            pool.append(candidate.model_copy(deep=True))
    if sources is not None:
        pool = [c for c in pool if c.source.value in sources]
    return pool


def evidence_items(
    retrieval: RetrievalResult,
    hypotheses: Sequence[Hypothesis],
    *,
    calibration: Calibration,
    geoclip_similarities: np.ndarray | None,
    logit_scale: float,
    consistency: Sequence[float | None],
    consistency_strength: float,
    text: TextEvidence | None = None,
) -> list[EvidenceItem]:
    """Every source's evidence items with unnormalised weights (see the module docstring)."""
    params = calibration.fusion
    items: list[EvidenceItem] = []
    if retrieval.neighbors:
        sims = np.array([n.similarity for n in retrieval.neighbors], dtype=np.float64)
        w = np.exp(params.gallery_sharpness * (sims - sims.max()))
        items += [EvidenceItem(GALLERY, n.lat, n.lon, float(wi), f"{CandidateSource.RETRIEVAL.value}:{n.id}")
                  for n, wi in zip(retrieval.neighbors, w, strict=True)]
    if retrieval.gps_candidates:
        sims = (geoclip_similarities if geoclip_similarities is not None
                else np.array([g.similarity for g in retrieval.gps_candidates], dtype=np.float64))
        w = np.exp(logit_scale * (sims - sims.max()))
        items += [EvidenceItem(GEOCLIP, g.lat, g.lon, float(wi), f"{CandidateSource.GPS_GALLERY.value}:gps-{i}")
                  for i, (g, wi) in enumerate(zip(retrieval.gps_candidates, w, strict=True))]
    strength = min(max(consistency_strength, 0.0), 1.0)
    for h, agree in zip(hypotheses, consistency, strict=True):
        if h.echo_of is not None:  # repeats its own prompt: not independent evidence
            continue
        factor = 1.0 if agree is None else 1.0 - strength * (1.0 - agree)
        items.append(EvidenceItem(
            source_of_hypothesis(h.shown_coordinates), h.lat, h.lon,
            (params.vlm_confidence_floor + h.confidence) * factor,
            f"{CandidateSource.VLM.value}:{h.variant}#{h.sample_index}",
        ))
    if text is not None:
        read = {region.text: region.confidence for region in text.regions}
        items += [EvidenceItem(OCR_PLACE, m.lat, m.lon, m.similarity * m.weight * read.get(m.text, 1.0),
                               f"{CandidateSource.OCR.value}:{ocr_ref(m.geonameid)}") for m in text.places]
        items += [EvidenceItem(OCR_LANGUAGE, p.lat, p.lon, p.weight, f"{OCR_LANGUAGE}:{p.country_code}:{i}")
                  for i, p in enumerate(text.prior_places)]
    return items


def ocr_ref(geonameid: int) -> str:
    """The ``source_ref`` of a candidate from a place named in the photo's text."""
    return f"geonames-{geonameid}"


def constrained_area_km2(constraints: Sequence[Constraint], geocoder: ReverseGeocoder) -> float:
    """The area of the Earth inside every constraint (the whole Earth without constraints): the
    share of an even lattice inside, countries and continents by their land polygons (the sea
    belongs to none), a circle bounding it by its exact area."""
    if not constraints:
        return EARTH_AREA_KM2
    lat, lon = fibonacci_lattice(AREA_LATTICE_POINTS)
    boundaries = geocoder.boundaries
    codes = [boundaries.countries[i].code if i >= 0 else None for i in boundaries.country_index(lat, lon).tolist()]
    inside = np.ones(len(lat), dtype=bool)
    for c in constraints:
        if c.kind == "country":
            inside &= np.array([code == c.country_code for code in codes], dtype=bool)
        elif c.kind == "continent":
            inside &= np.array([geocoder.continent_of(code) == c.continent if code else False for code in codes])
        else:
            inside &= c.contains(lat, lon, geocoder)
    radii = [c.radius_km for c in constraints if c.kind == "circle" and c.radius_km is not None]
    return allowed_area_km2(inside, radii)


def verify(
    retrieval: RetrievalResult,
    hypotheses: Sequence[Hypothesis],
    *,
    geoclip_embedding: np.ndarray | None,
    location_encoder: LocationEncoder | None,
    geocoder: ReverseGeocoder,
    config: VerifyConfig,
    constraints: Sequence[Constraint] = (),
    calibration: Calibration | None = None,
    text: TextEvidence | None = None,
    extra_candidates: Sequence[Candidate] = (),
) -> Verification:
    """Score, cluster and weigh the candidate pool (see the module docstring).
    ``calibration``: None uses the shipped default (:func:`~geosleuth.agent.confidence.load_calibration`).
    ``extra_candidates``: locations the VLM's tool calls proposed (``ToolObservation.candidates``): more
    candidates to judge, not more evidence (the model chose what to look up; only its answers count)."""
    if calibration is None:
        from geosleuth.agent.confidence import load_calibration

        calibration = load_calibration(None)
    weights = weights_of(config, calibration)
    if not any(w > 0 for w in weights.values()):
        raise ConfigError(
            "every evidence source is off (verify.w_geoclip, w_neighbor_support, w_vlm_agreement, w_text are 0, or the "
            "calibration gives them weight 0): turn at least one on"
        )
    components = _component_status(weights, retrieval, hypotheses, text)
    pool = candidate_pool(retrieval, hypotheses, constraints, sources=config.candidate_sources, text=text,
                          extra=extra_candidates)
    if not pool:
        return Verification(ranked=[], components=components)
    missing = [c for c in pool if c.place is None]
    for candidate, place in zip(missing, geocoder.lookup_many([(c.lat, c.lon) for c in missing]), strict=True):
        candidate.place = place

    similarities = None
    logit_scale = GEOCLIP_LOGIT_SCALE
    if location_encoder is not None:
        logit_scale = float(location_encoder.logit_scale)
        if geoclip_embedding is not None and retrieval.gps_candidates:
            similarities = geoclip_similarities(geoclip_embedding, retrieval, location_encoder)
    hyp_places = geocoder.lookup_many([(h.lat, h.lon) for h in hypotheses]) if hypotheses else []
    consistency = [geo_consistency(h, p, geocoder) for h, p in zip(hypotheses, hyp_places, strict=True)]
    items = evidence_items(
        retrieval, hypotheses, calibration=calibration, geoclip_similarities=similarities, logit_scale=logit_scale,
        consistency=consistency, consistency_strength=config.w_geo_consistency, text=text,
    )
    inside = contains_all(constraints, [c.lat for c in pool], [c.lon for c in pool], geocoder)
    items_inside = contains_all(constraints, [i.lat for i in items], [i.lon for i in items], geocoder)
    result = fuse(
        [c for c, ok in zip(pool, inside, strict=True) if ok], items, items_inside=items_inside.tolist(),
        weights=weights, calibration=calibration, cluster_radius_km=config.refine_radius_km,
        allowed_area_km2=constrained_area_km2(constraints, geocoder),
        center_places=lambda centres: geocoder.lookup_many(list(centres)),
    )
    ranked_keys = {candidate_key(c) for c in result.ranked}
    rejected = [c for c, ok in zip(pool, inside, strict=True) if not ok and candidate_key(c) not in ranked_keys]
    return Verification(ranked=result.ranked, rejected=rejected, components=components, evidence=result.evidence)


def _component_status(
    weights: dict[str, float], retrieval: RetrievalResult, hypotheses: Sequence[Hypothesis],
    text: TextEvidence | None = None,
) -> dict[str, str]:
    informed = [h for h in hypotheses if h.shown_coordinates > 0]
    unavailable = {
        GALLERY: None if retrieval.neighbors else "no gallery neighbours (no image gallery, or none returned)",
        GEOCLIP: None if retrieval.gps_candidates else "no GPS-gallery candidates",
        VLM_ZERO_SHOT: None if len(informed) < len(hypotheses) else "no zero-shot VLM answer",
        VLM_INFORMED: None if informed else "no retrieval-informed VLM answer",
        OCR_PLACE: None if text is not None and text.places else "no place named in text read in the photo",
        OCR_LANGUAGE: None if text is not None and text.prior_places else "no language identified in its text",
    }
    status: dict[str, str] = {}
    for name in SOURCES:
        if weights[name] <= 0:
            status[name] = "off: weight 0"
        elif unavailable[name]:
            status[name] = f"not applicable: {unavailable[name]}"
        else:
            status[name] = "on"
    echoes = sum(h.echo_of is not None for h in hypotheses)
    if echoes:
        status["echoes"] = f"{echoes} VLM answer(s) repeat a coordinate shown in their prompt: not counted as evidence"
    return status


def geoclip_similarities(
    geoclip_embedding: np.ndarray, retrieval: RetrievalResult, location_encoder: LocationEncoder
) -> np.ndarray:
    """Cosine similarity between the image's GeoCLIP embedding and each GPS candidate's location."""
    from geosleuth.index.gps_gallery import score_locations

    latlon = np.array([[g.lat, g.lon] for g in retrieval.gps_candidates], dtype=np.float64)
    return np.asarray(score_locations(geoclip_embedding, latlon, location_encoder), dtype=np.float64)


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
