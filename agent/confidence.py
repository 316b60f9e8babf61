"""The calibration file: the fusion's parameters and one monotone map per confidence level.

A calibration is a versioned JSON file (``format = "geosleuth-calibration"``, ``version = 1``)::

    {"format": "geosleuth-calibration", "version": 1, "id": "...", "source": "where it comes from",
     "fusion": {"sources": {"gallery": {"weight": 1.0, "miss": 0.5}, ...},
                "gallery_sharpness": 20.0, "vlm_confidence_floor": 0.25},
     "levels": {"country": {"method": "isotonic", "x": [...], "y": [...]}, ...}}

``fusion`` holds what :mod:`geosleuth.agent.fusion` needs (per-source log-linear weights and miss
rates); ``levels`` maps each level's raw model probability (see fusion) to a calibrated one. It is
fitted by ``geosleuth eval calibrate`` (:mod:`geosleuth.eval.calibration`); ``verify.calibration``
points at one, and the package ships a default (``agent/calibration_default.json``, fitted on the
simulation in ``bench/bench_fusion.py``: it says so in its ``source`` field).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geosleuth.errors import ConfigError
from geosleuth.types import LEVELS, LevelConfidence

CALIBRATION_FORMAT = "geosleuth-calibration"
CALIBRATION_VERSION = 1
DEFAULT_CALIBRATION_FILE = "calibration_default.json"

GALLERY = "gallery"
GEOCLIP = "geoclip"
VLM_ZERO_SHOT = "vlm-zero-shot"
VLM_INFORMED = "vlm-informed"
SOURCES = (GALLERY, GEOCLIP, VLM_ZERO_SHOT, VLM_INFORMED)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceParams(_Model):
    weight: float = Field(1.0, ge=0.0, description="exponent of this source's density in the log-linear pool")
    miss: float = Field(0.5, gt=0.0, lt=1.0, description="share of its density spread uniformly over the Earth")


class FusionParams(_Model):
    sources: dict[str, SourceParams] = Field(default_factory=lambda: {s: SourceParams() for s in SOURCES})
    gallery_sharpness: float = Field(20.0, ge=0.0, description="gallery item weight = exp(sharpness * similarity)")
    vlm_confidence_floor: float = Field(0.25, ge=0.0, description="VLM item weight = floor + stated confidence")

    @model_validator(mode="after")
    def _known_sources(self) -> FusionParams:
        unknown = sorted(set(self.sources) - set(SOURCES))
        missing = sorted(set(SOURCES) - set(self.sources))
        if unknown or missing:
            raise ValueError(f"fusion.sources must name exactly {list(SOURCES)} (unknown {unknown}, missing {missing})")
        return self


class LevelMap(_Model):
    """A monotone map from the model's raw probability to a calibrated one: ``isotonic`` is a
    piecewise-linear interpolation through (x, y) knots; ``platt`` is sigmoid(a * logit(raw) + b)."""

    method: Literal["isotonic", "platt", "identity"] = "identity"
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> LevelMap:
        if self.method == "isotonic":
            if len(self.x) < 2 or len(self.x) != len(self.y):
                raise ValueError("an isotonic map needs at least two (x, y) knots of equal length")
            if np.any(np.diff(self.x) < 0) or np.any(np.diff(self.y) < 0):
                raise ValueError("an isotonic map's x and y knots must be non-decreasing")
            if min(self.y) < 0 or max(self.y) > 1:
                raise ValueError("an isotonic map's y knots must be probabilities in [0, 1]")
        if self.method == "platt" and self.a < 0:
            raise ValueError("a Platt map needs a >= 0 to stay monotone")
        return self

    def apply(self, raw: np.ndarray | float) -> np.ndarray:
        values = np.clip(np.asarray(raw, dtype=np.float64), 0.0, 1.0)
        if self.method == "isotonic":
            return np.interp(values, self.x, self.y)
        if self.method == "platt":
            clipped = np.clip(values, 1e-6, 1 - 1e-6)
            return 1.0 / (1.0 + np.exp(-(self.a * np.log(clipped / (1 - clipped)) + self.b)))
        return values


class Calibration(_Model):
    format: Literal["geosleuth-calibration"] = CALIBRATION_FORMAT
    version: int = CALIBRATION_VERSION
    id: str = "uncalibrated"
    source: str = "built-in defaults, not fitted to any data"
    created_at: str | None = None
    fusion: FusionParams = Field(default_factory=FusionParams)
    levels: dict[str, LevelMap] = Field(default_factory=lambda: {level: LevelMap() for level in LEVELS})
    fit_report: dict[str, float | int | str] = Field(default_factory=dict)  # e.g. ECE per level on held-out data
    sha256: str = Field("", exclude=True)  # of the file it was read from (not part of the file)

    @model_validator(mode="after")
    def _check(self) -> Calibration:
        if self.version != CALIBRATION_VERSION:
            raise ValueError(f"calibration version {self.version} is not supported (this geosleuth reads "
                             f"version {CALIBRATION_VERSION}); refit it with `geosleuth eval calibrate`")
        missing = [level for level in LEVELS if level not in self.levels]
        if missing:
            raise ValueError(f"calibration has no map for level(s) {missing}")
        return self

    @property
    def label(self) -> str:
        """``id@hash`` as traces record it."""
        return f"{self.id}@{self.sha256[:12] or 'unhashed'}"

    def levels_for(self, raw: dict[str, float]) -> LevelConfidence:
        """Calibrated per-level probabilities from raw model probabilities (one per level)."""
        value = {level: float(self.levels[level].apply(raw[level])) for level in LEVELS}
        # The hierarchy holds by definition: the right city implies the right region and country.
        value["region"] = max(value["region"], value["city"])
        value["country"] = max(value["country"], value["region"])
        value["within_200km"] = max(value["within_200km"], value["within_25km"])
        return LevelConfidence(**value, calibration=self.label)


def default_calibration_path() -> Path:
    return Path(str(resources.files("geosleuth.agent") / DEFAULT_CALIBRATION_FILE))


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The calibration at ``path`` (None: the shipped default). Errors name the file and the fix."""
    file = Path(path).expanduser() if path is not None else default_calibration_path()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"calibration file {str(file)!r} cannot be read ({exc.strerror or exc}); set verify.calibration to a "
            "file written by `geosleuth eval calibrate`, or unset it to use the shipped default"
        ) from None
    try:
        calibration = Calibration.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"calibration file {str(file)!r} is not a valid geosleuth calibration: {problems}") from None
    return calibration.model_copy(update={"sha256": hashlib.sha256(raw).hexdigest()})


def calibration_json(calibration: Calibration) -> str:
    """The file text for ``calibration`` (what :func:`load_calibration` reads back)."""
    return calibration.model_dump_json(indent=2) + "\n"
