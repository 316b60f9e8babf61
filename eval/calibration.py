"""Fit the fusion's calibration from recorded evidence: source weights, miss rates, per-level maps.

Input: one :class:`CalibrationExample` per image, the fusion's recorded evidence
(``Prediction.evidence``: every cluster with each source's mass in it) and the true location. An
eval run's folder holds both (predictions.jsonl + the manifest's truth file): :func:`read_run`.

Fitting, in two steps:

1. Source weights and miss rates: maximum likelihood of the cell holding the truth (the cluster
   whose centre is nearest the truth, if within the cluster radius, else "elsewhere") under the
   fusion's posterior (:func:`geosleuth.agent.fusion.rescore`; the clustering and the per-cluster
   masses stay as recorded, item weighting inside a source is not refitted).
2. One monotone map per level from the raw model probability of the answer (the heaviest cluster
   under the fitted parameters) to the observed rate of being right: isotonic regression (pool
   adjacent violators) or Platt scaling.

The fit is checked on held-out images (``holdout`` share, chosen with ``seed``): expected
calibration error (ECE, 10 equal-width bins) per level before and after, written into the file's
``fit_report``. The shipped maps are then refitted on all images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError
from scipy.optimize import minimize

from geosleuth.agent.confidence import SOURCES, Calibration, FusionParams, LevelMap, SourceParams
from geosleuth.agent.fusion import EARTH_AREA_KM2, MIN_RADIUS_KM, raw_levels, rescore
from geosleuth.errors import DataFileError
from geosleuth.geo import ReverseGeocoder, haversine_km
from geosleuth.types import LEVELS, FusionEvidence, Place, Prediction

Method = Literal["isotonic", "platt"]
ECE_BINS = 10
MIN_EXAMPLES = 20


@dataclass(frozen=True)
class CalibrationExample:
    evidence: FusionEvidence
    lat: float  # the truth
    lon: float
    place: Place | None = None  # the truth's reverse-geocoded place (country/region/city levels)


@dataclass(frozen=True)
class Outcome:
    """The answer's raw per-level probabilities and whether it was right, one row per example."""

    raw: dict[str, np.ndarray]
    right: dict[str, np.ndarray]


def ece(confidence: Sequence[float] | np.ndarray, right: Sequence[bool] | np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: bin-size-weighted |accuracy - mean confidence| over equal-width bins."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(right, dtype=np.float64)
    if len(conf) == 0:
        return float("nan")
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(hit[mask].mean() - conf[mask].mean())
    return float(total / len(conf))


def reliability(confidence: np.ndarray, right: np.ndarray, bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """(mean confidence, observed rate, count) per non-empty bin: a reliability diagram's points."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(right, dtype=np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return [(float(conf[which == b].mean()), float(hit[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def _true_cell(evidence: FusionEvidence, lat: float, lon: float) -> int:
    """Index of the cluster holding the truth, or len(clusters) for elsewhere."""
    if not evidence.clusters:
        return 0
    d = np.array([float(haversine_km(c.lat, c.lon, lat, lon)) for c in evidence.clusters])
    nearest = int(d.argmin())
    return nearest if d[nearest] <= max(evidence.cluster_radius_km, MIN_RADIUS_KM) else len(evidence.clusters)


def _unpack(x: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    n = len(SOURCES)
    weights = {s: float(v) for s, v in zip(SOURCES, x[:n], strict=True)}
    miss = {s: float(1.0 / (1.0 + np.exp(-v))) for s, v in zip(SOURCES, x[n:], strict=True)}
    return weights, miss


def _table(examples: Sequence[CalibrationExample]) -> tuple[np.ndarray, ...]:
    """Every cell (each cluster, then "elsewhere") of every example as rows: per-source mass and
    presence, area, the row's example, and which row holds each example's truth."""
    masses, present, areas, starts, truth_rows = [], [], [], [], []
    for e in examples:
        clusters = e.evidence.clusters
        if not clusters:
            continue
        starts.append(len(areas))
        active = {s.source for c in clusters for s in c.sources}
        for c in clusters:
            by_source = {s.source: s.mass for s in c.sources}
            masses.append([by_source.get(s, 0.0) for s in SOURCES])
            present.append([s in by_source for s in SOURCES])
            areas.append(c.area_km2)
        rest = max(e.evidence.allowed_area_km2 - sum(c.area_km2 for c in clusters), min(c.area_km2 for c in clusters))
        masses.append([0.0] * len(SOURCES))
        present.append([s in active for s in SOURCES])
        areas.append(rest)
        truth_rows.append(starts[-1] + _true_cell(e.evidence, e.lat, e.lon))
    return (np.array(masses, dtype=np.float64).reshape(-1, len(SOURCES)),
            np.array(present, dtype=bool).reshape(-1, len(SOURCES)), np.array(areas, dtype=np.float64),
            np.array(starts, dtype=np.int64), np.array(truth_rows, dtype=np.int64))


def fit_sources(examples: Sequence[CalibrationExample], start: FusionParams) -> FusionParams:
    """Source weights and miss rates by maximum likelihood of the truth's cell (module docstring);
    the same formula as :func:`geosleuth.agent.fusion.rescore`, over all examples at once."""
    masses, present, areas, starts, truth_rows = _table(examples)
    if len(starts) == 0:
        return start
    log_area = np.log(areas)

    def loss(x: np.ndarray) -> float:
        weights, miss = _unpack(x)
        w = np.array([weights[s] for s in SOURCES])
        eps = np.array([miss[s] for s in SOURCES])
        density = (1.0 - eps) * masses / areas[:, None] + eps / EARTH_AREA_KM2
        log_mass = log_area + (present * w * np.log(density)).sum(axis=1)
        peak = np.maximum.reduceat(log_mass, starts)
        groups = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(log_mass))))
        lse = peak + np.log(np.add.reduceat(np.exp(log_mass - peak[groups]), starts))
        return float(np.mean(lse - log_mass[truth_rows])) + 1e-3 * float(np.sum((w - 1.0) ** 2))

    x0 = np.array([start.sources[s].weight for s in SOURCES]
                  + [float(np.log(start.sources[s].miss / (1 - start.sources[s].miss))) for s in SOURCES])
    bounds = [(0.0, 5.0)] * len(SOURCES) + [(-4.6, 4.6)] * len(SOURCES)  # miss rates within 1%-99%
    result = minimize(loss, x0, method="L-BFGS-B", bounds=bounds)
    weights, miss = _unpack(result.x)
    return start.model_copy(update={
        "sources": {s: SourceParams(weight=round(weights[s], 4), miss=round(min(max(miss[s], 0.01), 0.99), 6))
                    for s in SOURCES},
    })


def outcomes(examples: Sequence[CalibrationExample], params: FusionParams, geocoder: ReverseGeocoder) -> Outcome:
    """Each example's answer under ``params``: its raw per-level probabilities and whether it was right."""
    weights = {s: params.sources[s].weight for s in SOURCES}
    miss = {s: params.sources[s].miss for s in SOURCES}
    raw: dict[str, list[float]] = {level: [] for level in LEVELS}
    right: dict[str, list[bool]] = {level: [] for level in LEVELS}
    for e in examples:
        clusters = e.evidence.clusters
        if not clusters:
            continue
        _, _, posterior = rescore(e.evidence, weights, miss)
        values = raw_levels(posterior[:-1], [(c.lat, c.lon) for c in clusters], [c.place for c in clusters])
        k = int(np.argmax(posterior[:-1]))
        answer = clusters[k]
        distance = float(haversine_km(answer.lat, answer.lon, e.lat, e.lon))
        truth = e.place or geocoder.lookup(e.lat, e.lon)
        same_country = bool(answer.place and truth.country_code and truth.country_code == answer.place.country_code)
        same_region = same_country and answer.place is not None and truth.admin1 == answer.place.admin1
        same_city = bool(same_region and answer.place and truth.city is not None and truth.city == answer.place.city)
        hits = {"country": same_country, "region": same_region, "city": same_city,
                "within_25km": distance <= 25.0, "within_200km": distance <= 200.0}
        for level in LEVELS:
            raw[level].append(float(values[level][k]))
            right[level].append(hits[level])
    return Outcome({k: np.array(v) for k, v in raw.items()}, {k: np.array(v, dtype=bool) for k, v in right.items()})


def fit_isotonic(x: np.ndarray, y: np.ndarray) -> LevelMap:
    """Pool-adjacent-violators fit of y (0/1) on x, as interpolation knots from 0 to 1."""
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]
    blocks: list[list[float]] = []  # [sum y, count, sum x]
    for xi, yi in zip(xs, ys, strict=True):
        blocks.append([yi, 1.0, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            y2, n2, x2 = blocks.pop()
            blocks[-1][0] += y2
            blocks[-1][1] += n2
            blocks[-1][2] += x2
    kx = [b[2] / b[1] for b in blocks]
    ky = [b[0] / b[1] for b in blocks]
    knots_x, knots_y = [0.0], [ky[0]]
    for xi, yi in zip(kx, ky, strict=True):
        if xi > knots_x[-1]:
            knots_x.append(float(xi))
            knots_y.append(float(yi))
        else:
            knots_y[-1] = max(knots_y[-1], float(yi))
    if knots_x[-1] < 1.0:
        knots_x.append(1.0)
        knots_y.append(knots_y[-1])
    return LevelMap(method="isotonic", x=[round(v, 6) for v in knots_x],
                    y=[round(min(max(v, 0.0), 1.0), 6) for v in np.maximum.accumulate(knots_y)])


def fit_platt(x: np.ndarray, y: np.ndarray) -> LevelMap:
    """Logistic regression of y on logit(x): sigmoid(a * logit(x) + b), a >= 0."""
    z = np.log(np.clip(x, 1e-6, 1 - 1e-6) / (1 - np.clip(x, 1e-6, 1 - 1e-6)))
    t = np.asarray(y, dtype=np.float64)

    def loss(p: np.ndarray) -> float:
        s = p[0] * z + p[1]
        return float(np.mean(np.logaddexp(0.0, s) - t * s))

    result = minimize(loss, np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(0.0, 50.0), (-50.0, 50.0)])
    return LevelMap(method="platt", a=float(result.x[0]), b=float(result.x[1]))


def fit_levels(outcome: Outcome, method: Method) -> dict[str, LevelMap]:
    fit = fit_isotonic if method == "isotonic" else fit_platt
    return {level: fit(outcome.raw[level], outcome.right[level]) for level in LEVELS}


def calibrate(
    examples: Sequence[CalibrationExample],
    geocoder: ReverseGeocoder,
    *,
    method: Method = "isotonic",
    start: Calibration | None = None,
    calibration_id: str = "fitted",
    source: str,
    holdout: float = 0.25,
    seed: int = 0,
) -> Calibration:
    """A calibration fitted on ``examples`` (module docstring); ``source`` says where they come from."""
    usable = [e for e in examples if e.evidence.clusters]
    if len(usable) < MIN_EXAMPLES:
        raise DataFileError(
            f"only {len(usable)} image(s) carry fusion evidence; calibration needs at least {MIN_EXAMPLES} "
            "(run `geosleuth eval run` on more images, with this geosleuth version)"
        )
    base = start or Calibration()
    rng = np.random.default_rng(seed)
    test = set(rng.permutation(len(usable))[: max(1, int(round(holdout * len(usable))))].tolist())
    train = [e for i, e in enumerate(usable) if i not in test]
    held = [e for i, e in enumerate(usable) if i in test]
    report: dict[str, float | int | str] = {"images": len(usable), "held_out": len(held), "method": method,
                                            "seed": seed}
    params = fit_sources(train, base.fusion)
    held_outcome = outcomes(held, params, geocoder)
    held_maps = fit_levels(outcomes(train, params, geocoder), method)
    for level in LEVELS:
        raw, right = held_outcome.raw[level], held_outcome.right[level]
        report[f"ece_raw_{level}"] = round(ece(raw, right), 4)
        report[f"ece_{level}"] = round(ece(held_maps[level].apply(raw), right), 4)
        report[f"rate_{level}"] = round(float(np.mean(right)), 4)
    final = fit_sources(usable, base.fusion)
    return Calibration(
        id=calibration_id, source=source, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        fusion=final, levels=fit_levels(outcomes(usable, final, geocoder), method), fit_report=report,
    )


def read_run(run_dir: str | Path) -> tuple[list[CalibrationExample], list[str]]:
    """The examples of an eval run folder (manifest.json + predictions.jsonl), and notes on what was
    left out (failed images, images without fusion evidence)."""
    from .datasets import load_dataset

    folder = Path(run_dir).expanduser()
    manifest_path, predictions_path = folder / "manifest.json", folder / "predictions.jsonl"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{manifest_path}: cannot read the run's manifest ({exc}); give a folder written by "
                            "`geosleuth eval run`") from None
    truths = {t.id: t for t in load_dataset(manifest["dataset"], manifest["truth_file"], check_images=False).records}
    examples: list[CalibrationExample] = []
    skipped = {"failed or no coordinate": 0, "no fusion evidence (older geosleuth)": 0, "not in the truth file": 0}
    try:
        lines = predictions_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataFileError(f"{predictions_path}: cannot read the run's predictions ({exc})") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            body = row.get("prediction") if "prediction" in row else {k: v for k, v in row.items() if k != "id"}
            prediction = Prediction.model_validate(body) if body and "error" not in body else None
        except (json.JSONDecodeError, AttributeError, TypeError, ValidationError) as exc:
            raise DataFileError(f"{predictions_path}, line {number}: not a geosleuth result line ({exc})") from None
        truth = truths.get(str(row.get("id")))
        if truth is None:
            skipped["not in the truth file"] += 1
        elif prediction is None or not prediction.ok:
            skipped["failed or no coordinate"] += 1
        elif prediction.evidence is None:
            skipped["no fusion evidence (older geosleuth)"] += 1
        else:
            examples.append(CalibrationExample(prediction.evidence, truth.lat, truth.lon))
    notes = [f"{count} image(s) left out: {why}" for why, count in skipped.items() if count]
    return examples, notes


def level_outcomes(
    truths: Sequence[tuple[float, float]],
    answers: Sequence[tuple[float, float] | None],
    levels: Sequence[dict[str, float] | None],
    geocoder: ReverseGeocoder,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per level: (stated probability, was right) over the images whose answer stated levels."""
    from .metrics import place_hits

    rows = [i for i, (a, lv) in enumerate(zip(answers, levels, strict=True)) if a is not None and lv]
    if not rows:
        return {}
    truth_places = geocoder.lookup_many([truths[i] for i in rows])
    answer_places = geocoder.lookup_many([answers[i] for i in rows])  # type: ignore[misc]
    hits = place_hits(truth_places, answer_places)
    distance = np.array([float(haversine_km(*truths[i], *answers[i])) for i in rows])  # type: ignore[misc]
    right = {"country": hits[:, 0], "region": hits[:, 1], "city": hits[:, 2],
             "within_25km": distance <= 25.0, "within_200km": distance <= 200.0}
    return {level: (np.array([levels[i][level] for i in rows]), right[level]) for level in LEVELS}  # type: ignore[index]


def calibration_markdown(outcome: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """A table: per level, images, observed rate, mean stated probability, ECE."""
    lines = ["| level | images | right | mean stated P | ECE |", "|---|---|---|---|---|"]
    for level, (conf, right) in outcome.items():
        lines.append(f"| {level} | {len(conf)} | {np.mean(right):.3f} | {np.mean(conf):.3f} | {ece(conf, right):.3f} |")
    return "\n".join(lines)


def plot_reliability(path: Path, outcome: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """One reliability diagram per level (observed rate vs stated probability, point size = images)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(outcome), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(outcome), squeeze=False)
    for ax, (level, (conf, right)) in zip(axes[0], outcome.items(), strict=True):
        points = reliability(conf, right)
        ax.plot([0, 1], [0, 1], color="0.7", linewidth=1)
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=[10 + 3 * p[2] ** 0.5 * 5 for p in points])
        ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="stated probability", title=f"{level}\nECE {ece(conf, right):.3f}")
    axes[0][0].set_ylabel("observed rate")
    fig.tight_layout()
    fig.savefig(path)
