"""Whether a run's required stages answered: per-stage failure counts, and the degraded-run check.

A preset is reported as itself only when its required stages answered for all but
:data:`MAX_DEGRADED_SHARE` of the images; otherwise the run is refused (DegradedResultsError) unless
degraded results are allowed, and the report's title then says which stage was missing how often.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from geosleuth.errors import DegradedResultsError

from .run_folder import PREDICTIONS_FILE

# A preset is reported as itself only when its required stages answered for all but this share of images.
MAX_DEGRADED_SHARE = 0.01


def stage_failure_counts(predictions_path: Path, ids: set[str]) -> dict[str, dict[str, int]]:
    """Over the run's lines (``ids``): images by status, images in which each step recorded a failure,
    and images answered without each required stage."""
    from geosleuth.agent.batch import scan_results

    status: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for record in scan_results(predictions_path).records:
        if record.id not in ids:
            continue
        status[record.status] += 1
        if record.prediction is None:
            steps["perceive"] += 1  # the locate call raised: the image could not be read
            continue
        steps.update({failure.step for failure in record.prediction.failures})
        missing.update(record.prediction.missing_stages)
    return {"status": dict(status), "failures_by_step": dict(steps), "missing_stages": dict(missing)}


def check_degraded(stages: dict[str, dict[str, int]], n_images: int, out: Path, *, allow_degraded: bool) -> str:
    """The report title's degraded note ("" when none); raises DegradedResultsError when a required
    stage was missing for more than MAX_DEGRADED_SHARE of the images and that is not allowed."""
    missing = stages["missing_stages"]
    if not missing:
        return ""
    title = "degraded: " + ", ".join(f"{count} images without {stage}" for stage, count in sorted(missing.items()))
    worst = max(missing.values())
    if not allow_degraded and worst > MAX_DEGRADED_SHARE * n_images:
        raise DegradedResultsError(
            f"{title} of {n_images} (more than {MAX_DEGRADED_SHARE:.0%}), so this run is not reported as its "
            f"preset; the predictions are kept in {out / PREDICTIONS_FILE}. Bring the stage back and run the same "
            "command with --retry-degraded, or pass --allow-degraded to report it, titled as degraded"
        )
    return title
