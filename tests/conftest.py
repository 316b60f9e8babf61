"""Session-wide fixtures: tiny random models built locally from configs (no downloads), cached per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP checkpoint (projection_dim 768, so GeoCLIP's image head applies)."""
    from geosleuth.testing.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA checkpoint (CLIP vision tower, Llama text model, PIL image processor)."""
    from geosleuth.testing.tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="session")
def gps_2k_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 real GPS-gallery points (every 50th of GeoCLIP's 100K), as a CSV."""
    from geosleuth.index.gps_gallery import geoclip_gallery_csv

    lines = geoclip_gallery_csv().read_text().splitlines()
    out = tmp_path_factory.mktemp("gps") / "gps_2k.csv"
    out.write_text("\n".join([lines[0], *lines[1::50]]) + "\n")
    return out
