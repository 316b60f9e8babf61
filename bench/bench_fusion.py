"""A SIMULATION of the fusion's logic: simulated sources, real verify/decide code, held-out ECE.

This guards the logic, not the real accuracy: no photo is looked at. True locations are drawn from
GeoCLIP's shipped 100K GPS-gallery coordinates (a Flickr-like distribution), and each source's
error is drawn from a published accuracy table (% within 1 / 25 / 200 / 750 / 2500 km on IM2GPS3K):

- GPS candidates: GeoCLIP (14.11 / 34.47 / 50.65 / 69.67 / 83.82). Its top candidate is drawn from
  the table; the other 19 are the gallery points nearest it. Similarities come from a smooth
  stand-in location encoder (a unit vector per coordinate; logit scale ``--kappa``), the same for
  today's code and the new fusion.
- Gallery neighbours: 1-NN retrieval on MP16 (Vo et al. 2017, [L]kNN sigma=4: 7.2 / 19.4 / 26.9 /
  38.9 / 55.9). The most similar neighbour is drawn from the table; the other 14 agree with the
  truth more often, and all are more similar, when the first one is right.
- VLM answers: Img2Loc with GPT-4V (17.10 / 45.14 / 57.87 / 72.91 / 84.68). Per image one belief
  drawn from the table; 2 zero-shot and 6 retrieval-informed samples near it (or redrawn), stated
  confidence falling with the belief's error; 30% of informed samples copy the top GPS candidate or
  gallery neighbour shown in their prompt (the reason stage's echo check marks them).

Printed: acc@1/25/200/750/2500 on held-out images for each source alone, today's verify/decide
(loaded from git, ``--legacy-ref``), and the new fusion calibrated on the training images; ECE per
level on the held-out images; the goals and whether they are met. ``--write-calibration PATH`` fits
on all simulated images and writes the calibration the package ships as its default.

    python bench/bench_fusion.py [--images 3000] [--seed 0] [--write-calibration agent/calibration_default.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

THRESHOLDS = (1.0, 25.0, 200.0, 750.0, 2500.0)
GEOCLIP_TABLE = (14.11, 34.47, 50.65, 69.67, 83.82)
NN_TABLE = (7.2, 19.4, 26.9, 38.9, 55.9)
VLM_TABLE = (17.10, 45.14, 57.87, 72.91, 84.68)
EARTH_RADIUS_KM = 6371.0088


class SimulatedLocationEncoder:
    """Stand-in for GeoCLIP's location encoder: a coordinate's unit vector; cosine falls off smoothly."""

    name = "simulated-unit-vector"
    weights_hash = "simulation"
    dim = 3

    def __init__(self, logit_scale: float) -> None:
        self.logit_scale = logit_scale

    def encode(self, latlon: np.ndarray) -> np.ndarray:
        return unit_vectors(np.asarray(latlon, dtype=np.float64).reshape(-1, 2)).astype(np.float32)


def unit_vectors(latlon: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlon[:, 0]), np.radians(latlon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def draw_error_km(table: tuple[float, ...], rng: np.random.Generator) -> float:
    """An error distance whose CDF passes through the table's points (log-linear between them)."""
    xs = np.log10([0.1, *THRESHOLDS, 20000.0])
    ps = np.array([0.0, *(p / 100 for p in table), 1.0])
    return float(10 ** np.interp(rng.random(), ps, xs))


def displace(lat: float, lon: float, km: float, rng: np.random.Generator) -> tuple[float, float]:
    """The point ``km`` away in a random direction (great circle)."""
    bearing, d = rng.uniform(0, 2 * np.pi), km / EARTH_RADIUS_KM
    p1, l1 = np.radians(lat), np.radians(lon)
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(bearing))
    l2 = l1 + np.arctan2(np.sin(bearing) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    return float(np.degrees(p2)), float((np.degrees(l2) + 180) % 360 - 180)


def simulate_image(truth: tuple[float, float], gallery: np.ndarray, tree: Any, rng: np.random.Generator) -> Any:
    """Retrieval, VLM hypotheses and the GeoCLIP query for one simulated photo."""
    from geosleuth.agent.answers import ShownCoordinate, echo_of
    from geosleuth.types import GalleryNeighbor, GPSCandidate, Hypothesis, RetrievalResult

    belief = displace(*truth, draw_error_km(GEOCLIP_TABLE, rng), rng)
    _, nearest = tree.query(unit_vectors(np.array([belief])), k=19)
    gps = [GPSCandidate(lat=belief[0], lon=belief[1], similarity=0.0)]
    gps += [GPSCandidate(lat=float(gallery[i, 0]), lon=float(gallery[i, 1]), similarity=0.0) for i in nearest[0]]

    first_error = draw_error_km(NN_TABLE, rng)
    top_sim = 0.80 + 0.15 * np.exp(-first_error / 100.0) + rng.normal(0, 0.03)
    agree = 0.6 * np.exp(-first_error / 500.0)
    lat0, lon0 = displace(*truth, first_error, rng)
    neighbors = [GalleryNeighbor(id="n0", lat=lat0, lon=lon0, similarity=float(top_sim))]
    for i in range(1, 15):
        if rng.random() < agree:
            lat, lon = displace(*truth, float(rng.lognormal(np.log(8.0), 1.0)), rng)
            sim = top_sim - rng.uniform(0.0, 0.10)
        else:
            lat, lon = (float(v) for v in gallery[rng.integers(len(gallery))])
            sim = top_sim - rng.uniform(0.05, 0.25)
        neighbors.append(GalleryNeighbor(id=f"n{i}", lat=lat, lon=lon, similarity=float(sim)))
    neighbors.sort(key=lambda n: -n.similarity)

    belief_error = draw_error_km(VLM_TABLE, rng)
    vlm_belief = displace(*truth, belief_error, rng)
    confidence = float(np.clip(0.85 * np.exp(-belief_error / 400.0) + rng.normal(0, 0.12), 0.05, 0.95))
    shown = [ShownCoordinate(f"neighbor {i + 1}", n.lat, n.lon) for i, n in enumerate(neighbors[:10])]
    shown += [ShownCoordinate(f"gps candidate {i + 1}", g.lat, g.lon) for i, g in enumerate(gps[:10])]
    hypotheses = []
    for variant, samples, informed in (("neighbors-0", 2, False), ("neighbors-5", 2, True),
                                       ("neighbors-10", 2, True), ("neighbors-15", 2, True)):
        for index in range(samples):
            if informed and rng.random() < 0.3:
                copied = gps[0] if rng.random() < 0.5 else neighbors[0]
                point = (copied.lat, copied.lon)
            elif not informed and index == 0:  # the "VLM alone" row: the belief itself, as the table measures
                point = vlm_belief
            elif rng.random() < 0.8:
                point = displace(*vlm_belief, float(rng.lognormal(np.log(3.0), 1.0)), rng)
            else:
                point = displace(*truth, draw_error_km(VLM_TABLE, rng), rng)
            view = shown if informed else []
            hypotheses.append(Hypothesis(
                lat=point[0], lon=point[1], confidence=float(np.clip(confidence + rng.normal(0, 0.05), 0, 1)),
                raw_text="(simulated)", template_id="simulation", template_hash="-", model="simulated-vlm",
                variant=variant, sample_index=index, shown_coordinates=len(view),
                echo_of=echo_of(point[0], point[1], view),
            ))
    return RetrievalResult(neighbors=neighbors, gps_candidates=gps), hypotheses, unit_vectors(np.array([belief]))[0]


def load_legacy(ref: str) -> tuple[ModuleType, ModuleType] | None:
    """Today's verify and decide modules, as they were at git ``ref`` (None outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    modules = []
    for name in ("verify", "decide"):
        try:
            source = subprocess.run(["git", "-C", str(root), "show", f"{ref}:agent/{name}.py"], check=True,
                                    capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        spec = importlib.util.spec_from_loader(f"legacy_{name}", loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        exec(compile(source, f"{ref}:agent/{name}.py", "exec"), module.__dict__)  # noqa: S102 - our own history
        modules.append(module)
    return modules[0], modules[1]


def accuracy(errors: list[float]) -> list[float]:
    e = np.array(errors)
    return [100.0 * float(np.mean(e <= t)) for t in THRESHOLDS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000, help="simulated images (a third held out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kappa", type=float, default=16000.0, help="stand-in encoder's logit scale (~50 km width)")
    parser.add_argument("--legacy-ref", default="98aef99", help="git ref of today's verify/decide")
    parser.add_argument("--write-calibration", type=Path, help="also fit on all images and write the calibration")
    args = parser.parse_args()

    from scipy.spatial import cKDTree

    from geosleuth.agent.confidence import calibration_json, load_calibration
    from geosleuth.agent.decide import decide
    from geosleuth.agent.verify import verify
    from geosleuth.config import VerifyConfig
    from geosleuth.eval.calibration import CalibrationExample, calibrate, ece, outcomes
    from geosleuth.geo import ReverseGeocoder, haversine_km
    from geosleuth.index.gps_gallery import geoclip_gallery_csv, read_coordinates_csv
    from geosleuth.types import LEVELS, ImageRef

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    gallery = read_coordinates_csv(geoclip_gallery_csv())
    tree = cKDTree(unit_vectors(gallery))
    geocoder = ReverseGeocoder()
    encoder = SimulatedLocationEncoder(args.kappa)
    config = VerifyConfig()
    truths = [tuple(float(v) for v in gallery[i]) for i in rng.integers(len(gallery), size=args.images)]
    scenes = [simulate_image(t, gallery, tree, rng) for t in truths]
    n_train = (2 * args.images) // 3

    def fused(scene: Any, calibration: Any) -> Any:
        retrieval, hyps, query = scene
        checked = verify(retrieval, hyps, geoclip_embedding=query, location_encoder=encoder, geocoder=geocoder,
                         config=config, calibration=calibration)
        return decide(checked, image=ImageRef(path="sim"), hypotheses=hyps, geocoder=geocoder, config=config,
                      top_k=5, sources_used=[])

    def err(p: Any, t: tuple[float, float]) -> float:
        return float(haversine_km(p.lat, p.lon, t[0], t[1])) if p.lat is not None else 20000.0

    start = load_calibration(None)
    examples = [CalibrationExample(fused(s, start).evidence, *t) for s, t in zip(scenes, truths, strict=True)]
    fitted = calibrate(examples[:n_train], geocoder, start=start, calibration_id="simulation-train",
                       source="simulation (bench/bench_fusion.py), training images")
    test = list(zip(scenes[n_train:], truths[n_train:], strict=True))
    rows: dict[str, list[float]] = {"GeoCLIP top-1 alone": [], "nearest gallery neighbour alone": [],
                                    "VLM zero-shot sample alone": []}
    rows["today's verify/decide"] = []
    rows["new fusion (calibrated on training images)"] = []
    legacy = load_legacy(args.legacy_ref)
    test_examples = []
    for (retrieval, hyps, query), truth in test:
        rows["GeoCLIP top-1 alone"].append(err(retrieval.gps_candidates[0], truth))
        rows["nearest gallery neighbour alone"].append(err(retrieval.neighbors[0], truth))
        rows["VLM zero-shot sample alone"].append(err(hyps[0], truth))
        prediction = fused((retrieval, hyps, query), fitted)
        rows["new fusion (calibrated on training images)"].append(err(prediction, truth))
        test_examples.append(CalibrationExample(prediction.evidence, *truth))
        if legacy is not None:
            old_verify, old_decide = legacy
            ranked = old_verify.verify(retrieval, hyps, geoclip_embedding=query, location_encoder=encoder,
                                       geocoder=geocoder, config=config).ranked
            old = old_decide.decide(ranked, image=ImageRef(path="sim"), hypotheses=hyps, geocoder=geocoder,
                                    config=config, top_k=5, sources_used=[])
            rows["today's verify/decide"].append(err(old, truth))
    if legacy is None:
        del rows["today's verify/decide"]

    print("SIMULATION: simulated sources, real verify/decide code. It guards the fusion's logic, not real accuracy.")
    print(f"images: {args.images} ({n_train} to fit the calibration, {len(test)} held out), seed {args.seed}, "
          f"stand-in encoder logit scale {args.kappa:g}; tables: GeoCLIP {GEOCLIP_TABLE}, 1-NN {NN_TABLE}, "
          f"VLM (Img2Loc GPT-4V) {VLM_TABLE} (% within {THRESHOLDS} km, IM2GPS3K)")
    if legacy is not None:
        print(f"today's verify/decide: agent/verify.py and agent/decide.py as of git {args.legacy_ref}, same inputs")
    print(f"\n{'method (held-out images)':<46}" + "".join(f"{f'@{t:g} km':>10}" for t in THRESHOLDS))
    table = {name: accuracy(errors) for name, errors in rows.items()}
    for name, acc in table.items():
        print(f"{name:<46}" + "".join(f"{a:>10.1f}" for a in acc))

    held = outcomes(test_examples, fitted.fusion, geocoder)
    print(f"\n{'level':<14}{'rate right':>12}{'mean conf.':>12}{'ECE raw':>10}{'ECE calibrated':>16}")
    eces = {}
    for level in LEVELS:
        calibrated = fitted.levels[level].apply(held.raw[level])
        eces[level] = ece(calibrated, held.right[level])
        print(f"{level:<14}{np.mean(held.right[level]):>12.3f}{np.mean(calibrated):>12.3f}"
              f"{ece(held.raw[level], held.right[level]):>10.3f}{eces[level]:>16.3f}")
    print("fitted source weights / miss rates: " + ", ".join(
        f"{s} {p.weight:.2f}/{p.miss:.2f}" for s, p in fitted.fusion.sources.items()))

    new = table["new fusion (calibrated on training images)"]
    singles = [acc for name, acc in table.items() if "alone" in name]
    best_single = [max(acc[i] for acc in singles) for i in range(len(THRESHOLDS))]
    at_least_best = all(n >= b for n, b in zip(new, best_single, strict=True))
    goals = [("fusion >= best single source at every threshold", at_least_best),
             ("ECE <= 0.05 at every level (held out)", all(v <= 0.05 for v in eces.values()))]
    if "today's verify/decide" in table:
        old = table["today's verify/decide"]
        pairs = list(zip(new, old, strict=True))
        goals.append(("fusion beats today's verify/decide (>= at every threshold, > at one)",
                      all(n >= o for n, o in pairs) and any(n > o for n, o in pairs)))
    else:
        print(f"(today's code not loaded: git ref {args.legacy_ref!r} unavailable)")
    print("\ngoals:")
    for goal, met in goals:
        print(f"  [{'met' if met else 'MISSED'}] {goal}")

    if args.write_calibration is not None:
        shipped = calibrate(examples, geocoder, start=start, calibration_id="simulation-default",
                            source=f"SIMULATION, not real photos: bench/bench_fusion.py --images {args.images} "
                                   f"--seed {args.seed} (sources drawn from published IM2GPS3K accuracy tables). "
                                   "Refit on your own data with `geosleuth eval calibrate RUN_DIR`.",
                            seed=args.seed)
        args.write_calibration.write_text(calibration_json(shipped), encoding="utf-8")
        print(f"\nwrote {args.write_calibration} (fitted on all {len(examples)} simulated images)")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
