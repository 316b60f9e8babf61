"""Verification and decision: ranking, component switches, constraints, refinement, no-candidate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from geosleuth.agent.confidence import GALLERY, GEOCLIP, VLM_INFORMED, VLM_ZERO_SHOT
from geosleuth.agent.decide import decide
from geosleuth.agent.fusion import spherical_mean
from geosleuth.agent.verify import verify
from geosleuth.config import VerifyConfig
from geosleuth.constraints import Constraint
from geosleuth.errors import ConfigError
from geosleuth.geo import haversine_km
from geosleuth.types import Candidate, CandidateSource, GPSCandidate, Hypothesis, ImageRef, RetrievalResult


def hypothesis(lat: float, lon: float, *, country: str | None, continent: str | None = None,
               region: str | None = None, index: int = 0, clue: str = "a clue") -> Hypothesis:
    from geosleuth.types import Clue

    return Hypothesis(
        clues=[Clue(observation=clue, implication="somewhere")],
        continent=continent, country=country, region=region, lat=lat, lon=lon, confidence=0.5,
        raw_text="{}", template_id="geo_reasoning", template_hash="h", model="m", variant="neighbors-0",
        sample_index=index,
    )


def gps(*coords: tuple[float, float]) -> list[GPSCandidate]:
    return [GPSCandidate(lat=lat, lon=lon, similarity=0.0) for lat, lon in coords]


def query_at(location_encoder: Any, coord: tuple[float, float]) -> np.ndarray:
    """An image 'embedding' the real GeoCLIP location encoder puts exactly at ``coord``."""
    return location_encoder.encode(np.array([coord]))[0]


def dist_km(candidate: Candidate | Any, coord: tuple[float, float]) -> float:
    return float(haversine_km(candidate.lat, candidate.lon, coord[0], coord[1]))


def run(retrieval: RetrievalResult, hyps: list[Hypothesis], *, query: np.ndarray | None, enc: Any, geocoder: Any,
        constraints: tuple[Constraint, ...] = (), **weights: float) -> Any:
    return verify(
        retrieval, hyps, geoclip_embedding=query, location_encoder=enc, geocoder=geocoder,
        config=VerifyConfig(**weights), constraints=constraints,
    )


def test_candidate_at_the_query_location_wins_over_decoys(location_encoder: Any, geocoder: Any, doubles: Any) -> None:
    d = doubles
    retrieval = RetrievalResult(
        neighbors=d.neighbors_around(d.LISBON, 4, prefix="lis", similarity=0.8)
        + d.neighbors_around(d.TOKYO, 3, prefix="tok", similarity=0.7),
        gps_candidates=gps(d.PARIS, d.TOKYO, d.SYDNEY, d.NAIROBI, (38.75, -9.10)),
    )
    hyps = [
        hypothesis(*d.PARIS, country="France", index=0),
        hypothesis(38.70, -9.20, country="Portugal", index=1),
    ]
    result = run(retrieval, hyps, query=query_at(location_encoder, d.LISBON), enc=location_encoder, geocoder=geocoder)

    best = result.ranked[0]
    assert dist_km(best, d.LISBON) < 25
    assert all(dist_km(c, d.LISBON) > 1000 for c in result.ranked[-5:])  # decoys at the bottom
    heaviest = result.evidence.clusters[0]
    assert dist_km(heaviest, d.LISBON) < 25 and heaviest.posterior > 0.5
    assert sum(c.posterior for c in result.evidence.clusters) + result.evidence.elsewhere_posterior == pytest.approx(1)
    by_source = {s.source: s for s in heaviest.sources}
    assert by_source[GALLERY].items == 4 and by_source[GEOCLIP].items == 1
    assert [result.components[s] for s in (GALLERY, GEOCLIP, VLM_ZERO_SHOT)] == ["on"] * 3
    assert result.components[VLM_INFORMED].startswith("not applicable")


def test_geoclip_alone_picks_the_query_location_among_many_decoys(
    location_encoder: Any, geocoder: Any, doubles: Any
) -> None:
    rng = np.random.default_rng(0)
    decoys = [(float(rng.uniform(-60, 70)), float(rng.uniform(-180, 180))) for _ in range(40)]
    target = (-22.9068, -43.1729)  # Rio de Janeiro
    retrieval = RetrievalResult(gps_candidates=gps(*decoys[:20], target, *decoys[20:]))
    result = run(retrieval, [], query=query_at(location_encoder, target), enc=location_encoder, geocoder=geocoder)
    assert dist_km(result.ranked[0], target) < 1
    assert dist_km(result.evidence.clusters[0], target) < 1
    assert result.evidence.clusters[0].sources[0].mass > 0.99  # GeoCLIP's softmax: all but certain
    assert result.components[GALLERY].startswith("not applicable")
    assert result.components[VLM_ZERO_SHOT].startswith("not applicable")


def test_turning_a_component_off_changes_the_ranking(location_encoder: Any, geocoder: Any, doubles: Any) -> None:
    d = doubles
    # GeoCLIP says Tokyo; the gallery says Lisbon; the VLM samples say Sydney.
    retrieval = RetrievalResult(
        neighbors=d.neighbors_around(d.LISBON, 6, prefix="lis"),
        gps_candidates=gps(d.TOKYO),
    )
    hyps = [hypothesis(*d.SYDNEY, country="Australia", index=i) for i in range(3)]
    query = query_at(location_encoder, d.TOKYO)

    def winner(**weights: float) -> tuple[float, float]:
        best = run(retrieval, hyps, query=query, enc=location_encoder, geocoder=geocoder, **weights).ranked[0]
        assert best.cluster == 0  # ranked lists the heaviest cluster first
        return best.lat, best.lon

    only_geoclip = winner(w_neighbor_support=0, w_vlm_agreement=0)
    only_gallery = winner(w_geoclip=0, w_vlm_agreement=0)
    only_vlm = winner(w_geoclip=0, w_neighbor_support=0)
    assert dist_km(Candidate(lat=only_geoclip[0], lon=only_geoclip[1], source="gps-gallery"), d.TOKYO) < 1
    assert dist_km(Candidate(lat=only_gallery[0], lon=only_gallery[1], source="retrieval"), d.LISBON) < 25
    assert dist_km(Candidate(lat=only_vlm[0], lon=only_vlm[1], source="vlm"), d.SYDNEY) < 1

    off = run(retrieval, hyps, query=query, enc=location_encoder, geocoder=geocoder, w_geoclip=0)
    assert off.components[GEOCLIP] == "off: weight 0"
    assert all(GEOCLIP not in c.scores for c in off.ranked)


def test_an_answer_contradicting_its_stated_country_weighs_less(geocoder: Any, doubles: Any) -> None:
    d = doubles
    consistent = hypothesis(*d.PARIS, country="France", region="Ile-de-France", index=0)
    wrong_country = hypothesis(*d.NAIROBI, country="France", index=1)  # says France, points at Kenya
    wrong_country.confidence = 0.9

    def answer(strength: float) -> Candidate:
        return run(RetrievalResult(), [consistent, wrong_country], query=None, enc=None, geocoder=geocoder,
                   w_geo_consistency=strength).ranked[0]

    assert dist_km(answer(0.0), d.NAIROBI) < 1  # consistency ignored: the more confident answer
    assert dist_km(answer(1.0), d.PARIS) < 1  # a self-contradicting answer is no evidence


def test_a_constraint_moves_the_answer_inside_it(location_encoder: Any, geocoder: Any, doubles: Any) -> None:
    d = doubles
    retrieval = RetrievalResult(
        neighbors=d.neighbors_around(d.LISBON, 5, prefix="lis"),
        gps_candidates=gps(d.LISBON, d.TOKYO, d.LIMA, (34.69, 135.50)),
    )
    query = query_at(location_encoder, d.LISBON)
    free = run(retrieval, [], query=query, enc=location_encoder, geocoder=geocoder)
    assert dist_km(free.ranked[0], d.LISBON) < 25

    in_japan = run(retrieval, [], query=query, enc=location_encoder, geocoder=geocoder,
                   constraints=(Constraint.in_country("JP", "Japan"),))
    assert in_japan.ranked and all(c.place.country_code == "JP" for c in in_japan.ranked)
    assert {c.source_ref for c in in_japan.rejected} >= {n.id for n in retrieval.neighbors}

    in_sa = run(retrieval, [], query=query, enc=location_encoder, geocoder=geocoder,
                constraints=(Constraint.in_continent("South America"),))
    assert dist_km(in_sa.ranked[0], d.LIMA) < 1

    near_paris = run(retrieval, [], query=query, enc=location_encoder, geocoder=geocoder,
                     constraints=(Constraint.within(*d.PARIS, 100, "Paris"),))
    assert [c.source for c in near_paris.ranked] == [CandidateSource.USER]  # only the circle's centre fits
    assert dist_km(near_paris.ranked[0], d.PARIS) < 1


def test_all_weights_zero_is_refused(geocoder: Any) -> None:
    with pytest.raises(ConfigError, match="every evidence source is off"):
        verify(RetrievalResult(), [], geoclip_embedding=None, location_encoder=None, geocoder=geocoder,
               config=VerifyConfig(w_geoclip=0, w_neighbor_support=0, w_vlm_agreement=0))


def test_spherical_mean_across_the_antimeridian() -> None:
    lat, lon = spherical_mean([10.0, 10.0], [179.0, -179.0], [1.0, 1.0])
    assert lat == pytest.approx(10.0, abs=0.01)
    assert abs(lon) == pytest.approx(180.0, abs=1e-6)  # not 0 (naive averaging would say 0)
    lat, lon = spherical_mean([0.0, 0.0], [170.0, -160.0], [3.0, 1.0])
    assert 170.0 < lon < 180.0 or lon == pytest.approx(-180.0)


def test_clues_come_from_vlm_answers_near_the_winner(geocoder: Any, doubles: Any) -> None:
    hyps = [
        hypothesis(38.7, -9.1, country="Portugal", clue="azulejo tiles", index=0),
        hypothesis(38.71, -9.11, country="Portugal", clue="tram", index=1),
        hypothesis(*doubles.TOKYO, country="Japan", clue="kanji signs", index=2),
    ]
    checked = run(RetrievalResult(), hyps, query=None, enc=None, geocoder=geocoder)
    prediction = decide(checked, image=ImageRef(path="x.jpg"), hypotheses=hyps, geocoder=geocoder,
                        config=VerifyConfig(), top_k=3, sources_used=["vlm"])
    assert sorted(c.observation for c in prediction.clues) == ["azulejo tiles", "tram"]


def test_no_candidate_gives_no_coordinate_and_a_reason(geocoder: Any) -> None:
    result = verify(RetrievalResult(), [], geoclip_embedding=None, location_encoder=None, geocoder=geocoder,
                    config=VerifyConfig())
    assert result.ranked == []
    prediction = decide(result, image=ImageRef(path="x.jpg"), hypotheses=[], geocoder=geocoder,
                        config=VerifyConfig(), top_k=5, sources_used=[],
                        no_candidate_reason="no source proposed a candidate location: no VLM")
    assert prediction.lat is None and prediction.lon is None and not prediction.ok
    assert "no VLM" in (prediction.failure_reason or "")


def test_the_area_a_hint_leaves_is_measured_roughly_right(geocoder: Any, doubles: Any) -> None:
    from geosleuth.agent.verify import constrained_area_km2

    france = constrained_area_km2([Constraint.in_country("FR", "France")], geocoder)
    assert 0.5 < france / 640_000 < 2  # sea points near the coast do not count as France
    portugal = constrained_area_km2([Constraint.in_country("PT", "Portugal")], geocoder)
    assert portugal < 10 * 92_000
    circle = constrained_area_km2([Constraint.within(*doubles.PARIS, 50, "Paris")], geocoder)
    assert circle == pytest.approx(np.pi * 50**2, rel=0.01)
    both = constrained_area_km2([Constraint.in_country("FR", "France"), Constraint.within(*doubles.PARIS, 50)],
                                geocoder)
    assert both <= circle * 1.0001
