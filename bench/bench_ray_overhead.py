"""Ray's overhead on one machine: the same photos through the local batch engine and the Ray engine.

Both runs use the real pipeline on tiny random models built here (tiny CLIP + GeoCLIP's real heads, a
2K-point GPS gallery; the VLM: the tiny LLaVA in process by default, or none with ``--vlm none``),
the same photos and the same configuration, one after the other, each as the command a user runs:

  local: ``geosleuth batch PHOTOS --out R --trace-dir T``
  ray:   ``geosleuth batch PHOTOS --out R --trace-dir T --engine ray`` (starts a local Ray
         instance on all cores, an actor pool that loads the models once per actor, shards of 16 photos)

Overhead = ray wall time / local wall time - 1, both from process start to exit (imports, model
loading; Ray also starting Ray and its actor processes). Goal: <= 25 % on 200 photos. It also prints
the per-stage costs measured in the local run (mean seconds per photo from the traces), which
docs/ray.md's 1M-photo estimate uses, and the cost of one GPS-gallery top-k over GeoCLIP's full
100K x 512 gallery (numpy, measured).

    python bench/bench_ray_overhead.py [--photos 200] [--vlm tiny|none]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def _setup(root: Path, photos: int, vlm: str) -> tuple[Path, Path]:
    from geosleuth.config import Config
    from geosleuth.index.gps_gallery import geoclip_gallery_csv
    from geosleuth.testing import photos as photo_files
    from geosleuth.testing.synthetic import COUNTRIES, synthetic_photo
    from geosleuth.testing.tiny_clip import build_tiny_clip

    clip = build_tiny_clip(root / "tiny_clip")
    lines = geoclip_gallery_csv().read_text().splitlines()
    gps = root / "gps_2k.csv"
    gps.write_text("\n".join([lines[0], *lines[1::50]]) + "\n")
    tree: dict[str, dict] = {
        "encoders": {"image_model": str(clip), "device": "cpu", "dtype": "float32"},
        "index": {"gps_gallery": str(gps), "cache_dir": str(root / "cache")},
        "vlm": {"backend": "none"},
    }
    if vlm == "tiny":
        from geosleuth.testing.tiny_vlm import build_tiny_llava

        tree["vlm"] = {"backend": "transformers", "model": str(build_tiny_llava(root / "tiny_vlm")), "device": "cpu",
                       "samples_per_variant": 1, "max_new_tokens": 24, "concurrency": 2}
        tree["prompts"] = {"neighbor_counts": [0]}
    config = root / "geosleuth.toml"
    config.write_text(Config.model_validate(tree).to_toml())
    folder = root / "photos"
    codes = list(COUNTRIES)
    for i in range(photos):
        image = synthetic_photo(codes[i % len(codes)], seed=i, size=256)
        photo_files.write_photo(folder / f"p{i:04d}.jpg", image=image)
    return config, folder


def _run_cli(config: Path, folder: Path, out: Path, *extra: str) -> float:
    """``geosleuth batch`` as a user runs it (a fresh process: imports, model loading, the run)."""
    command = [str(Path(sys.executable).with_name("geosleuth")), "-c", str(config), "batch", str(folder),
               "--out", str(out), *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def _stage_costs(trace_dir: Path) -> dict[str, list[float]]:
    from geosleuth.types import Trace

    stages: dict[str, list[float]] = defaultdict(list)
    for file in trace_dir.glob("*.json"):
        for event in Trace.model_validate_json(file.read_text()).events:
            stages[event.step].append(event.duration_s)
    return stages


def _gps_topk_seconds(repeats: int = 20) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(100_000, 512)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query = gallery[0]
    started = time.perf_counter()
    for _ in range(repeats):
        scores = gallery @ query
        np.argpartition(-scores, 50)[:50]
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--vlm", choices=["none", "tiny"], default="tiny")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        config, folder = _setup(root, args.photos, args.vlm)
        # Warm the GPS-gallery embedding cache and the file cache once, outside both timings.
        _run_cli(config, folder, root / "warm.jsonl")
        local_s = _run_cli(config, folder, root / "local.jsonl", "--trace-dir", str(root / "traces"))
        ray_s = _run_cli(config, folder, root / "ray.jsonl", "--engine", "ray", "--trace-dir", str(root / "traces-ray"))
        stages = _stage_costs(root / "traces")

    n = args.photos
    print(f"photos: {n} synthetic 256x256 JPEGs; models: tiny CLIP + GeoCLIP heads, 2K GPS gallery, vlm={args.vlm}")
    print(f"machine: {os.cpu_count()} cores visible, shared with other work (figures vary with the load)")
    print(f"local engine: {local_s:7.2f} s wall, {n / local_s:6.2f} photos/s "
          "(`geosleuth batch`, one process: imports, model loading, the run)")
    print(f"ray engine:   {ray_s:7.2f} s wall, {n / ray_s:6.2f} photos/s (`geosleuth batch --engine ray`: also "
          f"starts a local Ray with all {os.cpu_count()} cores, one actor per core loading the models)")
    overhead = ray_s / local_s - 1
    print(f"Ray overhead on one machine: {overhead:+.1%} (goal <= +25%): {'met' if overhead <= 0.25 else 'NOT met'}")
    print("per-stage cost in the local run (measured, mean s/photo, tiny models, photos in flight overlap):")
    for step, values in stages.items():
        print(f"  {step:9s} {statistics.fmean(values):.4f}")
    print(f"GPS-gallery top-50 over 100,000 x 512 float32 (numpy, measured): {_gps_topk_seconds():.4f} s/photo")


if __name__ == "__main__":
    main()
