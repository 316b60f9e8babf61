"""The evidence fusion as a user meets it through verify + decide: the heaviest place wins, and the
confidence is a probability that does not move when the evidence does not.

GPS-gallery similarities here come from a smooth stand-in location encoder (a unit vector per
coordinate, so cosine similarity falls off smoothly with distance) with GeoCLIP's logit scale:
GeoCLIP's real encoder is so sharp that places 5 km apart are unrelated, which hides the structure
these tests are about.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from geosleuth.agent.decide import decide
from geosleuth.agent.verify import verify
from geosleuth.config import VerifyConfig
from geosleuth.constraints import Constraint
from geosleuth.geo import haversine_km
from geosleuth.types import GalleryNeighbor, GPSCandidate, Hypothesis, ImageRef, Prediction, RetrievalResult

ATLANTA = (33.7490, -84.3880)
NEW_YORK = (40.7128, -74.0060)


class SmoothLocationEncoder:
    """Test double: a coordinate's embedding is its unit vector on the sphere."""

    name = "smooth-test-encoder"
    weights_hash = "none"
    dim = 3
    logit_scale = 39.69

    def encode(self, latlon: np.ndarray) -> np.ndarray:
        lat, lon = np.radians(np.asarray(latlon, dtype=np.float64).reshape(-1, 2)).T
        return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1).astype(np.float32)


ENCODER = SmoothLocationEncoder()


def around(center: tuple[float, float], count: int, *, km: float = 8.0, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-1, 1, size=(count, 2)) * km / 111.0 / np.sqrt(2)
    return [(center[0] + dy, center[1] + dx) for dy, dx in offsets]


def hypothesis(lat: float, lon: float, *, country: str = "United States", index: int = 0, variant: str = "neighbors-0",
               shown: int = 0, confidence: float = 0.6, echo_of: str | None = None) -> Hypothesis:
    return Hypothesis(
        country=country, lat=lat, lon=lon, confidence=confidence, raw_text="{}", template_id="geo_reasoning",
        template_hash="h", model="m", variant=variant, sample_index=index, shown_coordinates=shown, echo_of=echo_of,
    )


def locate(retrieval: RetrievalResult, hyps: list[Hypothesis], geocoder: Any, *, query: tuple[float, float] | None,
           constraints: tuple[Constraint, ...] = (), top_k: int = 5) -> Prediction:
    embedding = ENCODER.encode(np.array([query]))[0] if query is not None else None
    checked = verify(retrieval, hyps, geoclip_embedding=embedding, location_encoder=ENCODER if query else None,
                     geocoder=geocoder, config=VerifyConfig(), constraints=constraints)
    return decide(checked, image=ImageRef(path="q.jpg"), hypotheses=hyps, geocoder=geocoder, config=VerifyConfig(),
                  top_k=top_k, sources_used=[])


def km(prediction: Prediction | Any, coord: tuple[float, float]) -> float:
    return float(haversine_km(prediction.lat, prediction.lon, coord[0], coord[1]))


def gps(*coords: tuple[float, float]) -> list[GPSCandidate]:
    return [GPSCandidate(lat=lat, lon=lon, similarity=0.0) for lat, lon in coords]


# A query between the two cities, nearer Atlanta: GeoCLIP's single best candidate is Atlanta, but
# each of the five New York candidates has about half its likelihood.
QUERY = (36.6, -80.6)


def atlanta_vs_new_york() -> RetrievalResult:
    return RetrievalResult(gps_candidates=gps(ATLANTA, *around(NEW_YORK, 5)))


def test_the_setup_has_one_best_candidate_outside_the_heavier_cluster() -> None:
    sims = ENCODER.encode(np.array([ATLANTA, *around(NEW_YORK, 5)])) @ ENCODER.encode(np.array([QUERY]))[0]
    ratio = np.exp(ENCODER.logit_scale * (sims[1:] - sims[0]))
    assert np.all(ratio < 1) and ratio.sum() > 1.5  # each NY candidate is weaker; together they outweigh Atlanta


def test_a_heavier_cluster_beats_a_single_higher_scoring_outlier(geocoder: Any) -> None:
    prediction = locate(atlanta_vs_new_york(), [], geocoder, query=QUERY)
    assert km(prediction, NEW_YORK) < 25
    assert km(prediction.alternatives[1], ATLANTA) < 1


def test_the_answers_confidence_is_never_below_an_alternatives(geocoder: Any) -> None:
    prediction = locate(atlanta_vs_new_york(), [], geocoder, query=QUERY)
    assert prediction.confidence is not None and len(prediction.alternatives) >= 2
    assert all(prediction.confidence >= alt.confidence for alt in prediction.alternatives)
    rng = np.random.default_rng(7)
    for _ in range(5):  # random scenes: the rule holds whatever the evidence
        coords = [(float(rng.uniform(-50, 60)), float(rng.uniform(-170, 170))) for _ in range(4)]
        cluster = around(coords[0], 3, seed=int(rng.integers(1000)))
        retrieval = RetrievalResult(
            gps_candidates=gps(*coords, *cluster),
            neighbors=[GalleryNeighbor(id=f"n{i}", lat=c[0], lon=c[1], similarity=float(rng.uniform(0.5, 1)))
                       for i, c in enumerate(around(coords[1], 3, seed=3))],
        )
        query = (float(rng.uniform(-50, 60)), float(rng.uniform(-170, 170)))
        result = locate(retrieval, [hypothesis(*coords[2])], geocoder, query=query)
        assert result.confidence is not None
        assert all(result.confidence >= alt.confidence for alt in result.alternatives)


def test_far_away_low_scoring_candidates_change_neither_answer_nor_confidence(geocoder: Any) -> None:
    base = atlanta_vs_new_york()
    base.neighbors = [GalleryNeighbor(id=f"ny{i}", lat=c[0], lon=c[1], similarity=0.8)
                      for i, c in enumerate(around(NEW_YORK, 3, seed=1))]
    before = locate(base, [], geocoder, query=QUERY)
    far = [(-33.87, 151.21), (-1.29, 36.82), (-12.05, -77.04), (35.68, 139.65), (64.1, -21.9)]
    more = base.model_copy(deep=True)
    more.gps_candidates += gps(*far)  # GeoCLIP finds them unlike the photo
    more.neighbors += [GalleryNeighbor(id=f"far{i}", lat=c[0], lon=c[1], similarity=0.3) for i, c in enumerate(far)]
    after = locate(more, [], geocoder, query=QUERY)
    assert km(after, (before.lat, before.lon)) < 0.01
    assert after.confidence == pytest.approx(before.confidence, abs=0.01)
    assert after.levels is not None and before.levels is not None
    assert after.levels.country == pytest.approx(before.levels.country, abs=0.01)


def test_a_single_survivor_of_a_constraint_gets_no_certainty_from_weak_evidence(geocoder: Any) -> None:
    # GeoCLIP looks at East Asia; its one candidate in France is far from what it sees.
    spread = [(35.7, 139.7), (37.5, 127.0), (31.2, 121.5), (25.0, 121.5), (22.3, 114.2), (48.86, 2.35)]
    retrieval = RetrievalResult(gps_candidates=gps(*spread))
    prediction = locate(retrieval, [], geocoder, query=(33.0, 128.0),
                        constraints=(Constraint.in_country("FR", "France"),))
    assert km(prediction, (48.86, 2.35)) < 1  # the only place left
    assert prediction.confidence is not None and prediction.confidence < 0.5
    assert prediction.levels is not None and prediction.levels.within_25km < 0.5


def test_no_candidate_supports_itself(geocoder: Any) -> None:
    lone_answer = hypothesis(*ATLANTA)
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id="lone", lat=NEW_YORK[0], lon=NEW_YORK[1], similarity=0.9)],
        gps_candidates=gps((48.86, 2.35)),
    )
    checked = verify(retrieval, [lone_answer], geoclip_embedding=None, location_encoder=None, geocoder=geocoder,
                     config=VerifyConfig())
    by_source = {c.source.value: c for c in checked.ranked}
    elsewhere = by_source["gps-gallery"]  # far from both: what "no support" looks like
    assert by_source["vlm"].scores["vlm-zero-shot"] == pytest.approx(elsewhere.scores["vlm-zero-shot"])
    assert by_source["retrieval"].scores["gallery"] == pytest.approx(elsewhere.scores["gallery"])
    # A second, independent answer at the same place does support the first.
    twice = verify(retrieval, [lone_answer, hypothesis(*ATLANTA, index=1)], geoclip_embedding=None,
                   location_encoder=None, geocoder=geocoder, config=VerifyConfig())
    vlm = [c for c in twice.ranked if c.source.value == "vlm"]
    assert all(c.scores["vlm-zero-shot"] > elsewhere.scores["vlm-zero-shot"] + 1 for c in vlm)


def test_four_exact_gallery_matches_beat_a_diffuse_gps_spread(geocoder: Any) -> None:
    truth = (45.4642, 9.1900)  # Milan
    elsewhere = (-23.55, -46.63)  # GeoCLIP looks near Sao Paulo, 9,000 km away, without conviction
    rng = np.random.default_rng(3)
    spread = [(elsewhere[0] + float(rng.uniform(-8, 8)), elsewhere[1] + float(rng.uniform(-8, 8))) for _ in range(20)]
    others = [(float(rng.uniform(-40, 60)), float(rng.uniform(-120, 140))) for _ in range(11)]
    retrieval = RetrievalResult(
        neighbors=[GalleryNeighbor(id=f"exact{i}", lat=c[0], lon=c[1], similarity=1.0)
                   for i, c in enumerate(around(truth, 4, km=2))]
        + [GalleryNeighbor(id=f"other{i}", lat=c[0], lon=c[1], similarity=0.9) for i, c in enumerate(others)],
        gps_candidates=gps(*spread),
    )
    prediction = locate(retrieval, [], geocoder, query=elsewhere)
    assert km(prediction, truth) < 5


def test_echoed_answers_do_not_count_as_agreement(geocoder: Any) -> None:
    lisbon, porto = (38.7223, -9.1393), (41.1579, -8.6291)
    zero_shot = hypothesis(*porto, country="Portugal", confidence=0.6)
    echoes = [hypothesis(*c, country="Portugal", index=i, variant="neighbors-5", shown=5, confidence=0.9,
                         echo_of="neighbor 1 (38.7223, -9.1393)") for i, c in enumerate(around(lisbon, 3, km=1))]
    prediction = locate(RetrievalResult(), [zero_shot, *echoes], geocoder, query=None)
    assert km(prediction, porto) < 1
    # The same answers, not echoes, are three agreeing informed answers: then Lisbon wins.
    independent = [e.model_copy(update={"echo_of": None}) for e in echoes]
    assert km(locate(RetrievalResult(), [zero_shot, *independent], geocoder, query=None), lisbon) < 5


def test_answers_outside_a_constraint_never_count_as_support(geocoder: Any) -> None:
    # Four answers just across the border in Spain, 13 km from a GPS candidate inside Portugal.
    border_pt, border_es = (41.78, -8.78), (41.88, -8.85)
    hyps = [hypothesis(*c, country="Spain", index=i) for i, c in enumerate(around(border_es, 4, km=0.3))]
    retrieval = RetrievalResult(gps_candidates=gps(border_pt, (38.72, -9.14), (35.7, 139.7)))
    in_portugal = (Constraint.in_country("PT", "Portugal"),)
    with_answers = locate(retrieval, hyps, geocoder, query=(40.0, -8.9), constraints=in_portugal)
    without = locate(retrieval, [], geocoder, query=(40.0, -8.9), constraints=in_portugal)
    assert with_answers.place is not None and with_answers.place.country_code == "PT"
    assert with_answers.evidence is not None and without.evidence is not None
    assert all(s.items == 0 for c in with_answers.evidence.clusters for s in c.sources if s.source.startswith("vlm"))
    assert [c.posterior for c in with_answers.evidence.clusters] == pytest.approx(
        [c.posterior for c in without.evidence.clusters], abs=1e-9)
    assert with_answers.confidence == pytest.approx(without.confidence, abs=1e-9)
