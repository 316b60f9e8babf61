"""Metrics against hand-computed cases: thresholds, antimeridian, failures, bootstrap, places, RvA."""

from __future__ import annotations

import math

import numpy as np
import pytest
from geographiclib.geodesic import Geodesic

from geosleuth.eval.datasets import GroundTruth
from geosleuth.eval.metrics import (
    THRESHOLDS_KM,
    bootstrap_ci,
    cap_area_km2,
    evaluate,
    place_hits,
    recall_vs_area,
    threshold_hits,
)
from geosleuth.eval.predictions import PredictedLocation
from geosleuth.geo import EARTH_MEAN_RADIUS_KM, haversine_km
from geosleuth.types import Place


def _point_at(lat: float, lon: float, km: float, azimuth: float = 90.0) -> tuple[float, float]:
    """The point ``km`` away on the WGS-84 geodesic from (lat, lon)."""
    out = Geodesic.WGS84.Direct(lat, lon, azimuth, km * 1000.0)
    return out["lat2"], out["lon2"]


def _pred(image_id: str, lat: float, lon: float, *alts: tuple[float, float]) -> PredictedLocation:
    return PredictedLocation(image_id, lat, lon, None, ((lat, lon), *alts))


def test_threshold_is_strict_at_the_edge() -> None:
    hits = threshold_hits([24.999999, 25.0, 25.000001, float("nan")], [25])
    assert hits[:, 0].tolist() == [True, False, False, False]


def test_end_to_end_just_under_and_just_over_25_km() -> None:
    truths = [GroundTruth("under", 10.0, 20.0), GroundTruth("over", 10.0, 20.0)]
    preds = [
        _pred("under", *_point_at(10.0, 20.0, 24.999)),
        _pred("over", *_point_at(10.0, 20.0, 25.001)),
    ]
    m = evaluate(truths, preds, resamples=0)
    assert m.acc_km["25"].value == pytest.approx(0.5)
    assert m.acc_km["200"].value == pytest.approx(1.0)
    assert m.acc_km["1"].value == 0.0


def test_antimeridian_distance_is_short() -> None:
    m = evaluate([GroundTruth("a", 0.0, 179.9)], [_pred("a", 0.0, -179.9)], resamples=0)
    assert m.mean_km.value == pytest.approx(22.26, abs=0.01)
    assert m.acc_km["25"].value == 1.0
    assert m.acc_km["1"].value == 0.0


def test_failures_are_misses_in_every_accuracy_and_counted() -> None:
    truths = [GroundTruth(str(i), 0.0, 0.0) for i in range(4)]
    preds = [
        _pred("0", 0.0, 0.0),  # exact
        PredictedLocation.failed("1", "unparseable answer"),
        PredictedLocation.failed("2", "VLM timeout"),
        # "3" has no prediction at all
    ]
    m = evaluate(truths, preds, resamples=0)
    assert m.n == 4
    assert m.failures == 3
    assert m.failure_reasons == {"unparseable answer": 1, "VLM timeout": 1, "no prediction for this image": 1}
    for threshold in THRESHOLDS_KM:
        assert m.acc_km[str(threshold)].value == pytest.approx(0.25)
        assert m.acc_km[str(threshold)].n == 4
    # Errors only over the one success, and it says so.
    assert m.mean_km.value == pytest.approx(0.0, abs=1e-9)
    assert m.mean_km.n == 1
    assert m.median_km.n == 1
    # GeoScore: 5000 for the exact hit, 0 for each failure (not the score of a (0, 0) guess).
    assert m.geoscore.value == pytest.approx(5000.0 / 4)


def test_failure_is_not_scored_as_null_island() -> None:
    # The truth is at (0, 0): a failure scored as (0, 0) would be a perfect hit.
    m = evaluate([GroundTruth("a", 0.0, 0.0)], [PredictedLocation.failed("a", "no answer")], resamples=0)
    assert m.acc_km["2500"].value == 0.0
    assert m.geoscore.value == 0.0
    assert m.mean_km.value is None and m.mean_km.n == 0


def test_mean_and_median_error_hand_computed() -> None:
    truths = [GroundTruth(str(i), 0.0, 0.0) for i in range(3)]
    preds = [_pred("0", *_point_at(0, 0, 10.0)), _pred("1", *_point_at(0, 0, 20.0)), _pred("2", *_point_at(0, 0, 90.0))]
    m = evaluate(truths, preds, resamples=0)
    assert m.mean_km.value == pytest.approx(40.0, abs=1e-6)
    assert m.median_km.value == pytest.approx(20.0, abs=1e-6)


def test_predictions_for_unknown_images_are_not_scored() -> None:
    m = evaluate([GroundTruth("a", 0, 0)], [_pred("a", 0, 0), _pred("zzz", 0, 0)], resamples=0)
    assert m.n == 1 and m.unmatched_predictions == 1


def test_bootstrap_ci_contains_point_and_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    values = (rng.random(500) < 0.3).astype(float)
    first = bootstrap_ci(values, resamples=400, seed=7)
    again = bootstrap_ci(values, resamples=400, seed=7)
    other = bootstrap_ci(values, resamples=400, seed=8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first[0] <= values.mean() <= first[1]
    assert first[1] - first[0] < 0.2  # a real interval, not [0, 1]


def test_evaluate_intervals_contain_estimates_and_repeat_with_seed() -> None:
    rng = np.random.default_rng(0)
    truths, preds = [], []
    for i in range(200):
        lat, lon = float(rng.uniform(-60, 60)), float(rng.uniform(-180, 180))
        truths.append(GroundTruth(str(i), lat, lon))
        if i % 10 == 0:
            preds.append(PredictedLocation.failed(str(i), "error"))
        else:
            preds.append(_pred(str(i), *_point_at(lat, lon, float(rng.exponential(400.0)))))
    a = evaluate(truths, preds, resamples=300, seed=1)
    b = evaluate(truths, preds, resamples=300, seed=1)
    assert a.model_dump() == b.model_dump()
    for est in [*a.acc_km.values(), a.mean_km, a.median_km, a.geoscore]:
        assert est.ci is not None
        assert est.ci[0] <= est.value <= est.ci[1]


def test_place_hits_levels() -> None:
    paris = Place(country_code="FR", admin1="Ile-de-France", city="Paris")
    truth = [paris, paris, paris, paris, Place(country_code="SG", admin1=None, city="Singapore"), Place()]
    pred = [
        Place(country_code="FR", admin1="Ile-de-France", city="Paris"),
        Place(country_code="FR", admin1="Ile-de-France", city="Versailles"),
        Place(country_code="FR", admin1="Normandy", city="Paris"),
        None,  # failure
        Place(country_code="SG", admin1=None, city="Singapore"),
        Place(),  # unknown country never matches
    ]
    assert place_hits(truth, pred).tolist() == [
        [True, True, True],
        [True, True, False],
        [True, False, False],
        [False, False, False],
        [True, True, True],
        [False, False, False],
    ]


def test_country_accuracy_with_the_real_geocoder() -> None:
    from geosleuth.geo import ReverseGeocoder

    truths = [GroundTruth("paris", 48.8566, 2.3522), GroundTruth("nyc", 40.7128, -74.0060), GroundTruth("x", 1, 1)]
    preds = [_pred("paris", 48.86, 2.35), _pred("nyc", 45.50, -73.57)]  # Montreal: wrong country
    m = evaluate(truths, preds, geocoder=ReverseGeocoder(), resamples=0)
    assert m.country is not None and m.country.value == pytest.approx(1 / 3)
    assert m.region is not None and m.region.value == pytest.approx(1 / 3)


def test_place_accuracy_at_borders_and_at_sea_with_the_real_geocoder() -> None:
    from geosleuth.geo import ReverseGeocoder

    truths = [GroundTruth("douglas", 31.345, -109.545), GroundTruth("juarez", 31.72, -106.45),
              GroundTruth("sea", 30.0, -40.0), GroundTruth("basel", 47.56, 7.59)]
    preds = [
        _pred("douglas", 31.320, -109.545),  # 2.8 km away but across the border, in Mexico
        _pred("juarez", 31.73, -106.46),  # same city
        _pred("sea", 30.0, -40.0),  # exact, but at sea: there is no country to get right
        _pred("basel", 47.555, 7.595),
    ]
    m = evaluate(truths, preds, geocoder=ReverseGeocoder(), resamples=0)
    assert m.acc_km["25"].value == 1.0
    assert m.country is not None and m.country.value == pytest.approx(2 / 4)
    assert m.city is not None and m.city.value == pytest.approx(2 / 4)
    assert m.places is not None and "Natural Earth" in m.places and "GeoNames" in m.places


def test_no_geocoder_means_no_place_metrics() -> None:
    m = evaluate([GroundTruth("a", 0, 0)], [_pred("a", 0, 0)], resamples=0)
    assert m.country is None and m.region is None and m.city is None


def test_cap_area() -> None:
    r = EARTH_MEAN_RADIUS_KM
    assert cap_area_km2(math.pi * r) == pytest.approx(4 * math.pi * r * r)
    assert cap_area_km2(1.0) == pytest.approx(math.pi, rel=1e-6)  # small caps are flat discs


def test_recall_vs_area_constructed_case() -> None:
    truths = [GroundTruth("a", 0.0, 0.0), GroundTruth("b", 0.0, 0.0), GroundTruth("c", 0.0, 0.0)]
    # Candidates for "a" at about 1112, 111 and 11 km from the truth, in that rank order.
    ranked = [[(0.0, 10.0), (0.0, 1.0), (0.0, 0.1)], [(0.0, 0.05)], []]  # "c" failed
    curves = {c.radius_km: c for c in recall_vs_area(truths, ranked, radii_km=[25.0, 200.0, 2000.0])}
    cap25 = cap_area_km2(25.0)
    pts25 = curves[25.0].points
    assert [p.k for p in pts25] == [1, 2, 3]
    assert [p.area_km2 for p in pts25] == pytest.approx([cap25, 2 * cap25, 3 * cap25])
    # "b" is inside its first 25 km cap; "a" needs all three caps; "c" never.
    assert [p.recall for p in pts25] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert [p.recall for p in curves[200.0].points] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert [p.recall for p in curves[2000.0].points] == pytest.approx([2 / 3, 2 / 3, 2 / 3])


def test_recall_vs_area_cap_edge_is_outside() -> None:
    """A candidate exactly ``radius_km`` away (the same haversine the caps use) does not recall its image:
    the cap is open, as accuracy thresholds are strict."""
    edge_km = float(haversine_km(0.0, 0.0, 0.0, 1.0))
    truths = [GroundTruth("edge-then-inside", 0.0, 0.0), GroundTruth("inside", 0.0, 0.0)]
    ranked = [[(0.0, 1.0), (0.0, 0.5)], [(0.0, 0.999)]]
    (curve,) = recall_vs_area(truths, ranked, radii_km=[edge_km])
    assert [(p.k, p.recall) for p in curve.points] == [(1, 0.5), (2, 1.0)]


def test_evaluate_reports_rva_only_with_rankings() -> None:
    truths = [GroundTruth("a", 0.0, 0.0)]
    without = evaluate(truths, [_pred("a", 0.0, 1.0)], resamples=0)
    assert without.rva is None
    with_alts = evaluate(truths, [_pred("a", 0.0, 1.0, (0.0, 0.01))], resamples=0, rva_radii_km=[25.0])
    assert with_alts.rva is not None
    assert [p.recall for p in with_alts.rva[0].points] == [0.0, 1.0]
