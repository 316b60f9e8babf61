"""Read the text in a photo (signs, shop fronts, plates) with RapidOCR: real detection and recognition models
(ONNX, shipped inside the ``rapidocr-onnxruntime`` package), offline, on the CPU."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from geosleuth.types import TextRegion

READER_ID = "rapidocr-onnxruntime (PP-OCR det+rec)"


class TextReader:
    """Loads the OCR models once (on first use) and reads text lines from images.

    Lines the recogniser scores below ``min_confidence`` are dropped: an unreadable sign gives no text,
    not a guess.
    """

    name = READER_ID

    def __init__(self, *, min_confidence: float = 0.7) -> None:
        self.min_confidence = min_confidence
        self._engine: Any | None = None
        self._lock = threading.Lock()  # onnxruntime sessions are shared; one read at a time per reader

    def _load(self) -> Any:
        if self._engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:  # pragma: no cover - a dependency of the package
                raise RuntimeError(
                    "OCR needs the 'rapidocr-onnxruntime' package: reinstall geosleuth (bash scripts/install.sh)"
                ) from exc
            # onnxruntime ignores OMP_NUM_THREADS and starts a thread per core in every process: Ray sets
            # it to each actor's CPUs, and two actors on two cores then spent ~15 % more CPU (docs/ray.md).
            threads = _thread_limit()
            limits = {"intra_op_num_threads": threads, "inter_op_num_threads": threads} if threads else {}
            self._engine = RapidOCR(**limits)
        return self._engine

    def read(self, image: Image.Image, box: tuple[float, float, float, float] | None = None) -> list[TextRegion]:
        """Text lines in ``image`` (or in ``box`` = (x0, y0, x1, y1) of it), in reading order, boxes in the
        coordinates of the whole image."""
        x0 = y0 = 0.0
        if box is not None:
            x0, y0, x1, y1 = _clip_box(box, image.size)
            image = image.crop((x0, y0, x1, y1))
        with self._lock:
            engine = self._load()
            result, _ = engine(np.asarray(image.convert("RGB")))
        regions: list[TextRegion] = []
        for points, text, score in result or []:
            text = " ".join(str(text).split())
            if not text or float(score) < self.min_confidence:
                continue
            xs = [float(p[0]) + x0 for p in points]
            ys = [float(p[1]) + y0 for p in points]
            regions.append(
                TextRegion(
                    text=text,
                    confidence=min(1.0, max(0.0, float(score))),
                    box=(min(xs), min(ys), max(xs), max(ys)),
                )
            )
        regions.sort(key=lambda r: (round(r.box[1] / 20), r.box[0]))
        return regions


def _clip_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = size
    x0, x1 = max(0.0, min(x0, x1)), min(float(width), max(x0, x1))
    y0, y1 = max(0.0, min(y0, y1)), min(float(height), max(y0, y1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"box {box} holds no pixels of a {width}x{height} image")
    return x0, y0, x1, y1


def _thread_limit() -> int | None:
    """OMP_NUM_THREADS when set to a positive number (the usual cap on a process's compute threads)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
