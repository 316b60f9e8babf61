"""Fixtures shared by the retrieval tests (encoders, GPS gallery, gallery store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from geosleuth.config import EncoderConfig


@pytest.fixture(scope="session")
def tiny_clip_encoder(tiny_clip_dir: Path):
    """The "clip+geoclip" image encoder over the tiny random CLIP (CPU, float32)."""
    from geosleuth.index.encoders import create_image_encoder

    return create_image_encoder(EncoderConfig(image_model=str(tiny_clip_dir), device="cpu", batch_size=4))


@pytest.fixture(scope="session")
def geoclip_location_encoder():
    """GeoCLIP's real pretrained location encoder (weights ship in the geoclip package)."""
    from geosleuth.index.encoders import create_location_encoder

    return create_location_encoder(EncoderConfig(device="cpu"))


@pytest.fixture(scope="session")
def synthetic_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MP16-style table (6 photos per country, 7 countries) of JPEGs that also carry EXIF GPS;
    returns the table's path (images under ``<its folder>/images``). Treat as read-only."""
    from geosleuth.testing.synthetic import make_synthetic_gallery

    return make_synthetic_gallery(tmp_path_factory.mktemp("synthetic"), 6, image_format="jpeg", exif_gps=True)
