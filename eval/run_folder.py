"""An evaluation run's folder: its file names, the checks before resuming into it, its missing-images list.

The layout is described in :mod:`geosleuth.eval.run`. A folder holds the predictions of one set of
settings (:data:`IDENTITY_KEYS`); resuming with other settings is refused rather than mixing them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosleuth.errors import DataFileError
from geosleuth.fileio import atomic_write_json

from .report import MANIFEST_FILE

if TYPE_CHECKING:
    from .datasets import GroundTruth

PREDICTIONS_FILE = "predictions.jsonl"
MISSING_IMAGES_FILE = "missing_images.txt"
TRACES_DIR = "traces"
# Settings of a run folder that must not change when a run is resumed into it: the lines already
# there were made with them.
IDENTITY_KEYS = ("dataset", "truth_file", "preset", "config_hash", "exclude_same_author")
_MAX_LISTED_MISSING = 20


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """A killed run leaves the old file or the new one, never half of one."""
    atomic_write_json(path, data, default=str)


def read_run_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(
            f"{path}: not readable JSON ({exc}); delete the run folder or choose another --out"
        ) from None
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: expected a JSON object; delete the run folder or choose another --out")
    return data


def check_run_folder(out: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix results of different settings in one predictions file."""
    predictions = out / PREDICTIONS_FILE
    if not predictions.is_file() or predictions.stat().st_size == 0 or overwrite:
        return
    if not resume:
        raise DataFileError(
            f"{out} already holds a run ({PREDICTIONS_FILE}); resume it, replace it (--overwrite), or choose "
            "another --out"
        )
    previous = read_run_manifest(out / MANIFEST_FILE)
    if previous is None:
        raise DataFileError(
            f"{out} has {PREDICTIONS_FILE} but no {MANIFEST_FILE}, so nothing says which settings made those "
            "predictions; choose another --out, or replace it (--overwrite)"
        )
    changed = [key for key in IDENTITY_KEYS if previous.get(key) != identity[key]]
    if changed:
        differences = "; ".join(f"{key}: {previous.get(key)!r} there, {identity[key]!r} now" for key in changed)
        raise DataFileError(
            f"{out} holds a run with other settings ({differences}); resuming would mix their predictions. "
            "Choose another --out for these settings, or replace that run (--overwrite)"
        )


def list_unusable_images(
    out: Path, truths: list[GroundTruth], missing: list[str], predictions_path: Path, notes: list[str]
) -> list[str]:
    """Ids of the images that could not be read: missing files (the loader's check) and files the
    pipeline could not decode (their error lines); written to missing_images.txt and noted."""
    from geosleuth.agent.batch import scan_results

    unreadable = {
        record.id for record in scan_results(predictions_path).records if record.error_type == "ImageLoadError"
    }
    unusable = set(missing) | unreadable
    listed = [t.id for t in truths if t.id in unusable]
    missing_path = out / MISSING_IMAGES_FILE
    if not listed:
        missing_path.unlink(missing_ok=True)  # from an earlier run of this folder whose images have since appeared
        return listed
    missing_path.write_text("".join(f"{image_id}\n" for image_id in listed), encoding="utf-8")
    shown = ", ".join(listed[:_MAX_LISTED_MISSING])
    more = f" and {len(listed) - _MAX_LISTED_MISSING} more" if len(listed) > _MAX_LISTED_MISSING else ""
    notes.append(
        f"missing or unreadable images, counted as failures (all {len(listed)} in {MISSING_IMAGES_FILE}): "
        f"{shown}{more}"
    )
    return listed
