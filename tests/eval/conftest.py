"""Fixtures for the evaluation-run tests: real tiny models, a real synthetic gallery store, and a
synthetic geotagged benchmark (IM2GPS3K's columns) of other pictures in the same seven countries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geosleuth.config import Config


@pytest.fixture(scope="session")
def run_image_encoder(tiny_clip_dir: Path) -> Any:
    """The tiny CLIP with GeoCLIP's image head, as the pipeline builds it from ``run_config``."""
    from geosleuth.config import EncoderConfig
    from geosleuth.index.encoders import create_image_encoder

    return create_image_encoder(EncoderConfig(image_model=str(tiny_clip_dir), device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def run_gallery(tmp_path_factory: pytest.TempPathFactory, run_image_encoder: Any) -> dict[str, Path]:
    """A real FAISS gallery store of 35 synthetic photos (5 per country, 3 authors per country).

    ``table``: its MP16-style table (IMG_ID, AUTHOR, LAT, LON, ...), whose columns IM2GPS3K shares,
    so it also serves as a benchmark whose every image is in the gallery; ``images``: that table's
    image root; ``store``: the store folder.
    """
    from geosleuth.index.build import build_store
    from geosleuth.index.sources import TableSource
    from geosleuth.testing.synthetic import make_synthetic_gallery

    root = tmp_path_factory.mktemp("run_gallery")
    table = make_synthetic_gallery(root / "gallery", 5)
    store = build_store(TableSource(table), root / "store", encoder=run_image_encoder).path
    return {"table": table, "images": table.parent, "store": store}


@pytest.fixture(scope="session")
def run_benchmark(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seven other synthetic photos (one per country, JPEG, so no id is a gallery id), with an
    IM2GPS3K-style metadata file ``truth`` under image root ``images``."""
    from geosleuth.testing.synthetic import make_synthetic_gallery

    root = tmp_path_factory.mktemp("run_benchmark")
    truth = make_synthetic_gallery(root, 1, seed=7, image_format="jpeg", csv_name="im2gps3k_places365.csv")
    return {"truth": truth, "images": root}


@pytest.fixture(scope="session")
def run_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by every run, so the 2K GPS-gallery embeddings are computed once."""
    return tmp_path_factory.mktemp("run_cache")


@pytest.fixture(scope="session")
def run_config(
    tiny_clip_dir: Path, tiny_vlm_dir: Path, gps_2k_csv: Path, run_gallery: dict[str, Path], run_cache_dir: Path
) -> Config:
    """Everything real and small: tiny CLIP + GeoCLIP head, GeoCLIP's location encoder, a 2K GPS
    gallery, the synthetic gallery store, the tiny LLaVA in process with short replies. Shared: copy
    it (``model_copy(deep=True)``) before changing it."""
    return Config.model_validate(
        {
            "encoders": {"image_model": str(tiny_clip_dir), "device": "cpu", "dtype": "float32"},
            "index": {
                "gallery": str(run_gallery["store"]), "gps_gallery": str(gps_2k_csv), "cache_dir": str(run_cache_dir),
            },
            "retrieval": {"k_neighbors": 5, "k_dissimilar": 2, "k_gps": 10},
            "vlm": {
                "backend": "transformers", "model": str(tiny_vlm_dir), "device": "cpu", "dtype": "float32",
                "samples_per_variant": 1, "max_new_tokens": 16, "concurrency": 2,
            },
            "prompts": {"neighbor_counts": [0, 5]},
            "text": {"ocr": False},  # OCR has its own pipeline tests (tests/tools)
        }
    )
