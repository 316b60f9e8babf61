"""Benchmark metrics with bootstrap confidence intervals.

Conventions (what every number means):

- ``n`` is the number of ground-truth images. A failure (no prediction, an error line, an
  unparseable answer) is a miss in every accuracy and scores 0 GeoScore; it is never dropped from
  the denominator and never scored as a coordinate. ``failures`` counts them.
- Accuracy within d km: fraction of the n images whose prediction is strictly closer than d km
  (geodesic on WGS-84 by default, as the published benchmarks compute it). Values are fractions in
  [0, 1]; tables show percentages.
- Mean / median error: over the successful predictions only; ``n`` inside the estimate says how many.
- Country / region / city accuracy: truth and prediction are reverse-geocoded with the shared
  :class:`geosleuth.geo.ReverseGeocoder` (never the dataset's own place columns, so runs compare);
  ``EvalMetrics.places`` records how. Country = same ISO code (Natural Earth polygons); region = same
  country and same admin1 (two empty admin1s in one country, e.g. Singapore, count as the same
  region); city = same region and same nearest GeoNames place. An unknown country code never
  matches: a truth at sea (no country) is a miss at every level.
- Intervals: percentile bootstrap over images (seeded, vectorised). Accuracies, GeoScore and
  place accuracies are resampled over all n images with one shared set of resamples; mean / median
  error over the successful predictions.
- Recall vs area (RvA), only when predictions carry ranked candidates: see :func:`recall_vs_area`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from geosleuth.geo import EARTH_MEAN_RADIUS_KM, geodesic_km, geoscore, haversine_km
from geosleuth.types import Place

from .datasets import GroundTruth
from .predictions import Matched, PredictedLocation, match_to_truth

THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)
DEFAULT_RVA_RADII_KM: tuple[float, ...] = (25.0, 200.0, 750.0)
DistanceMethod = Literal["geodesic", "haversine"]
DISTANCE_LABELS = {"geodesic": "geodesic (WGS-84)", "haversine": f"haversine (R = {EARTH_MEAN_RADIUS_KM} km)"}

# Bound on the (resamples x items) index block drawn at once, so memory stays small for any n.
_BOOTSTRAP_BLOCK_ITEMS = 250_000
_MAX_FAILURE_REASONS = 20


class PlaceLookup(Protocol):
    """What the metrics need from a reverse geocoder (``geosleuth.geo.ReverseGeocoder`` fits)."""

    def lookup_many(self, coords: Sequence[tuple[float, float]]) -> list[Place]: ...


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_Model):
    """A point estimate, its bootstrap interval (None when not computed) and the items it covers."""

    value: float | None
    ci: tuple[float, float] | None = None
    n: int


class RvAPoint(_Model):
    k: int  # candidates examined
    area_km2: float  # k spherical caps
    recall: float  # fraction of all n images whose truth lies in one of the first k caps


class RvACurve(_Model):
    radius_km: float
    cap_area_km2: float
    points: list[RvAPoint]


class BootstrapSettings(_Model):
    resamples: int
    seed: int
    confidence: float


class EvalMetrics(_Model):
    """Everything ``geosleuth eval score`` reports; ``model_dump(mode="json")`` is metrics.json."""

    n: int
    failures: int
    failure_reasons: dict[str, int] = Field(default_factory=dict)
    # Scored answers made without a required stage (e.g. no VLM), by stage; counted beside failures.
    degraded: int = 0
    degraded_stages: dict[str, int] = Field(default_factory=dict)
    unmatched_predictions: int = 0  # predictions whose id is not in the ground truth (not scored)
    acc_km: dict[str, Estimate]
    mean_km: Estimate
    median_km: Estimate
    geoscore: Estimate
    country: Estimate | None = None
    region: Estimate | None = None
    city: Estimate | None = None
    rva: list[RvACurve] | None = None
    distance: str
    bootstrap: BootstrapSettings
    places: str | None = None  # how truth and prediction places were derived (the geocoder's description)


def distances_km(
    truth_lat: ArrayLike,
    truth_lon: ArrayLike,
    pred_lat: ArrayLike,
    pred_lon: ArrayLike,
    *,
    method: DistanceMethod = "geodesic",
) -> NDArray[np.float64]:
    """Distance per pair; NaN where the prediction is missing (NaN coordinates)."""
    t_lat, t_lon = np.asarray(truth_lat, dtype=np.float64), np.asarray(truth_lon, dtype=np.float64)
    p_lat, p_lon = np.asarray(pred_lat, dtype=np.float64), np.asarray(pred_lon, dtype=np.float64)
    out = np.full(t_lat.shape, np.nan)
    ok = np.isfinite(p_lat) & np.isfinite(p_lon)
    if ok.any():
        fn = geodesic_km if method == "geodesic" else haversine_km
        out[ok] = fn(t_lat[ok], t_lon[ok], p_lat[ok], p_lon[ok])
    return out


def matched_distances_km(matched: Matched, *, method: DistanceMethod = "geodesic") -> NDArray[np.float64]:
    """Distance from each truth to its prediction, NaN for failures."""
    t = np.array([(g.lat, g.lon) for g in matched.truths], dtype=np.float64).reshape(-1, 2)
    p = np.array(
        [x.ranked[0] if x.ok else (np.nan, np.nan) for x in matched.predictions], dtype=np.float64
    ).reshape(-1, 2)
    return distances_km(t[:, 0], t[:, 1], p[:, 0], p[:, 1], method=method)


def threshold_hits(distances: ArrayLike, thresholds_km: Iterable[float] = THRESHOLDS_KM) -> NDArray[np.bool_]:
    """(n, len(thresholds)) booleans: distance strictly below each threshold. NaN (failure) is never a hit."""
    d = np.asarray(distances, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore"):
        return np.less(d, np.asarray(list(thresholds_km), dtype=np.float64)[None, :]) & np.isfinite(d)


def _statistic(block: NDArray[np.float64], statistic: Literal["mean", "median"]) -> NDArray[np.float64]:
    return block.mean(axis=1) if statistic == "mean" else np.median(block, axis=1)


def bootstrap_ci(
    values: ArrayLike,
    *,
    statistic: Literal["mean", "median"] = "mean",
    resamples: int = 1000,
    seed: int | Sequence[int] = 0,
    confidence: float = 0.95,
) -> NDArray[np.float64]:
    """Percentile bootstrap interval of a per-item statistic, vectorised.

    ``values``: (n,) or (n, m) per-item values (m metrics share the same resamples). Returns (2,) or
    (2, m): lower and upper bounds. Same inputs and seed give the same interval.
    """
    v = np.asarray(values, dtype=np.float64)
    squeeze = v.ndim == 1
    v2 = v[:, None] if squeeze else v
    n = v2.shape[0]
    if n == 0 or resamples < 1:
        raise ValueError("bootstrap needs at least one item and one resample")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK_ITEMS // n)
    stats = np.empty((resamples, v2.shape[1]), dtype=np.float64)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        stats[start:stop] = _statistic(v2[idx], statistic)
    alpha = (1.0 - confidence) / 2.0
    bounds = np.quantile(stats, [alpha, 1.0 - alpha], axis=0)
    return bounds[:, 0] if squeeze else bounds


def place_hits(
    truth_places: Sequence[Place], pred_places: Sequence[Place | None]
) -> NDArray[np.bool_]:
    """(n, 3) booleans: same country, same region, same city (rules: module docstring)."""
    out = np.zeros((len(truth_places), 3), dtype=bool)
    for i, (t, p) in enumerate(zip(truth_places, pred_places, strict=True)):
        if p is None or t.country_code is None or t.country_code != p.country_code:
            continue
        out[i, 0] = True
        if t.admin1 == p.admin1:
            out[i, 1] = True
            out[i, 2] = t.city is not None and t.city == p.city
    return out


def cap_area_km2(radius_km: float) -> float:
    """Area of a spherical cap of geodesic radius ``radius_km`` on the mean-radius Earth."""
    r = EARTH_MEAN_RADIUS_KM
    angle = min(max(radius_km, 0.0) / r, math.pi)
    return 2.0 * math.pi * r * r * (1.0 - math.cos(angle))


def recall_vs_area(
    truths: Sequence[GroundTruth],
    ranked: Sequence[Sequence[tuple[float, float]]],
    *,
    radii_km: Iterable[float] = DEFAULT_RVA_RADII_KM,
) -> list[RvACurve]:
    """Recall as a function of the total area searched, for ranked candidate lists.

    Definition: each candidate's region is a spherical cap of ``radius_km`` around it. Searching the
    first k candidates costs k caps of area (overlaps counted twice: what a searcher scanning the
    regions in rank order pays, an upper bound on their union). An image is recalled at k when some
    one of its first k candidates is strictly closer than ``radius_km`` (haversine, as the caps are
    spherical). Recall is over all n images: an empty list (a failure) is never recalled. One curve
    per radius, with a point for every k up to the longest list.
    """
    if len(truths) != len(ranked):
        raise ValueError(f"{len(truths)} truths but {len(ranked)} ranked candidate lists")
    n = len(truths)
    longest = max((len(r) for r in ranked), default=0)
    radii = [float(r) for r in radii_km]
    if n == 0 or longest == 0:
        return [RvACurve(radius_km=r, cap_area_km2=cap_area_km2(r), points=[]) for r in radii]
    # (n, longest) distances, inf where a list is shorter.
    dist = np.full((n, longest), np.inf)
    rows = [i for i, r in enumerate(ranked) for _ in r]
    cols = [k for r in ranked for k in range(len(r))]
    cand = np.array([c for r in ranked for c in r], dtype=np.float64).reshape(-1, 2)
    truth = np.array([(truths[i].lat, truths[i].lon) for i in rows], dtype=np.float64).reshape(-1, 2)
    dist[rows, cols] = haversine_km(truth[:, 0], truth[:, 1], cand[:, 0], cand[:, 1])
    curves: list[RvACurve] = []
    for radius in radii:
        inside = dist < radius
        # first rank (1-based) whose cap holds the truth; longest + 1 = never
        first = np.where(inside.any(axis=1), inside.argmax(axis=1) + 1, longest + 1)
        cap = cap_area_km2(radius)
        points = [
            RvAPoint(k=k, area_km2=k * cap, recall=float(np.count_nonzero(first <= k)) / n)
            for k in range(1, longest + 1)
        ]
        curves.append(RvACurve(radius_km=radius, cap_area_km2=cap, points=points))
    return curves


def _estimate(value: float | None, ci: NDArray[np.float64] | None, n: int) -> Estimate:
    interval = (float(ci[0]), float(ci[1])) if ci is not None else None
    return Estimate(value=None if value is None else float(value), ci=interval, n=n)


def _failure_reasons(predictions: Sequence[PredictedLocation]) -> dict[str, int]:
    counts = Counter(p.failure or "unspecified failure" for p in predictions if not p.ok)
    top = dict(counts.most_common(_MAX_FAILURE_REASONS))
    rest = sum(counts.values()) - sum(top.values())
    if rest:
        top["(other reasons)"] = rest
    return top


def evaluate(
    truths: Sequence[GroundTruth],
    predictions: Sequence[PredictedLocation],
    *,
    geocoder: PlaceLookup | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    distance: DistanceMethod = "geodesic",
    thresholds_km: Sequence[int] = THRESHOLDS_KM,
    rva_radii_km: Iterable[float] | None = DEFAULT_RVA_RADII_KM,
) -> EvalMetrics:
    """Score ``predictions`` against ``truths`` (matched by id; conventions: module docstring).

    ``geocoder``: None skips country/region/city accuracy. ``resamples=0`` skips the intervals.
    ``rva_radii_km``: None skips recall vs area; it is also skipped when no prediction carries more
    than one ranked candidate.
    """
    if not truths:
        raise ValueError("no ground-truth images to score against")
    matched = match_to_truth(truths, predictions)
    preds = matched.predictions
    n = len(truths)
    ok = np.array([p.ok for p in preds], dtype=bool)
    dist = matched_distances_km(matched, method=distance)

    # Per-image columns resampled together: accuracies, GeoScore (0 for failures), places.
    hits = threshold_hits(dist, thresholds_km).astype(np.float64)
    scores = np.where(ok, geoscore(np.nan_to_num(dist, nan=0.0)), 0.0)
    columns = [hits, scores[:, None]]
    if geocoder is not None:
        truth_places = geocoder.lookup_many([(t.lat, t.lon) for t in truths])
        ok_places = iter(geocoder.lookup_many([p.ranked[0] for p in preds if p.ok]))
        pred_places = [next(ok_places) if p.ok else None for p in preds]
        columns.append(place_hits(truth_places, pred_places).astype(np.float64))
    per_image = np.hstack(columns)
    point = per_image.mean(axis=0)
    ci_all = (
        bootstrap_ci(per_image, resamples=resamples, seed=seed, confidence=confidence) if resamples else None
    )

    def column(j: int) -> Estimate:
        return _estimate(point[j], ci_all[:, j] if ci_all is not None else None, n)

    acc = {str(t): column(j) for j, t in enumerate(thresholds_km)}
    n_t = len(thresholds_km)

    errors = dist[ok]
    m = int(errors.size)
    if m:
        mean_ci = median_ci = None
        if resamples:
            # Same resamples (seed stream [seed, 1]) for both, over the successful predictions only.
            mean_ci = bootstrap_ci(errors, statistic="mean", resamples=resamples, seed=[seed, 1],
                                   confidence=confidence)
            median_ci = bootstrap_ci(errors, statistic="median", resamples=resamples, seed=[seed, 1],
                                     confidence=confidence)
        mean_km = _estimate(float(errors.mean()), mean_ci, m)
        median_km = _estimate(float(np.median(errors)), median_ci, m)
    else:
        mean_km = median_km = Estimate(value=None, ci=None, n=0)

    rva = None
    if rva_radii_km is not None and any(len(p.ranked) > 1 for p in preds):
        rva = recall_vs_area(truths, [p.ranked for p in preds], radii_km=rva_radii_km)

    return EvalMetrics(
        n=n,
        failures=int(n - ok.sum()),
        failure_reasons=_failure_reasons(preds),
        degraded=sum(1 for p in preds if p.degraded),
        degraded_stages=dict(Counter(stage for p in preds if p.degraded for stage in p.missing_stages)),
        unmatched_predictions=len(matched.unmatched_ids),
        acc_km=acc,
        mean_km=mean_km,
        median_km=median_km,
        geoscore=column(n_t),
        country=column(n_t + 1) if geocoder is not None else None,
        region=column(n_t + 2) if geocoder is not None else None,
        city=column(n_t + 3) if geocoder is not None else None,
        places=(getattr(geocoder, "description", None) or type(geocoder).__name__) if geocoder is not None else None,
        rva=rva,
        distance=DISTANCE_LABELS[distance],
        bootstrap=BootstrapSettings(resamples=resamples, seed=seed, confidence=confidence),
    )
