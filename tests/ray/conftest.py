"""Photos and a tiny-model configuration for the Ray engine tests (the cluster: ``ray_cluster`` in
tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight synthetic photos from four countries (two in a sub-folder) and one broken file."""
    from geosleuth.testing import photos
    from geosleuth.testing.synthetic import synthetic_photo

    root = tmp_path_factory.mktemp("ray_photos")
    for i, country in enumerate(["FR", "JP", "BR", "KE"] * 2):
        photos.write_photo(root / ("sub" if i >= 6 else "") / f"{country.lower()}{i}.png",
                           image=synthetic_photo(country, seed=i))
    photos.write_text_file(root / "broken.jpg")
    return root


@pytest.fixture(scope="session")
def ray_config(tmp_path_factory: pytest.TempPathFactory, write_tiny_config) -> Path:
    """The real pipeline on the tiny models, deterministic: no VLM (``vlm.backend = none``)."""
    return write_tiny_config(tmp_path_factory.mktemp("ray_cfg"), vlm={"backend": "none"})
