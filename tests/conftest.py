"""Session-wide fixtures: tiny random models built locally from configs (no downloads), cached per session."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geosleuth.geo import ReverseGeocoder

# Rich wraps at the console width (COLUMNS), and messages quote tmp paths of any length: so wide that
# nothing wraps, for every test, whatever terminal (or none, in CI) runs the suite. Rich reads COLUMNS
# whenever a Console is made; a test that passes its own COLUMNS to CliRunner keeps it.
CONSOLE_COLUMNS = "4000"


@pytest.fixture(autouse=True)
def _console_never_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", CONSOLE_COLUMNS)
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)


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


# Real models and indexes shared by the agent and tool tests: GeoCLIP's shipped location encoder, the tiny
# random CLIP with GeoCLIP's real image head, the 2K GPS gallery, offline reverse geocoding.
@pytest.fixture(scope="session")
def geocoder() -> ReverseGeocoder:
    return ReverseGeocoder()


@pytest.fixture(scope="session")
def location_encoder() -> Any:
    from geosleuth.index.encoders import GeoCLIPLocationEncoder

    return GeoCLIPLocationEncoder(device="cpu")


@pytest.fixture(scope="session")
def tiny_image_encoder(tiny_clip_dir: Path) -> Any:
    from geosleuth.index.encoders import CLIPImageEncoder

    return CLIPImageEncoder(str(tiny_clip_dir), with_geoclip_head=True, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def gps_gallery(gps_2k_csv: Path, location_encoder: Any) -> Any:
    from geosleuth.index.gps_gallery import GPSGallery

    return GPSGallery.load(str(gps_2k_csv), location_encoder, cache_dir=None)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory, tiny_image_encoder: Any) -> Path:
    """A real FAISS gallery store: 5 synthetic photos per country (7 countries), tiny CLIP embeddings."""
    from geosleuth.index.build import build_store
    from geosleuth.index.sources import TableSource
    from geosleuth.testing.synthetic import make_synthetic_gallery

    root = tmp_path_factory.mktemp("synthetic_store")
    table = make_synthetic_gallery(root / "gallery", 5)
    return build_store(TableSource(table), root / "store", encoder=tiny_image_encoder).path


@pytest.fixture(scope="session")
def write_tiny_config(tiny_clip_dir: Path, gps_2k_csv: Path):
    """A function writing ``folder/geosleuth.toml`` for the real pipeline on tiny models: tiny CLIP + GeoCLIP's
    real heads on CPU, the 2K GPS gallery, a cache under ``folder``, no OCR; ``sections`` override/extend it, e.g.
    ``vlm={"backend": "openai", ...}``."""
    from geosleuth.config import Config

    def write(folder: Path, **sections: dict) -> Path:
        tree: dict[str, dict] = {
            "encoders": {"image_model": str(tiny_clip_dir), "device": "cpu", "dtype": "float32"},
            "index": {"gps_gallery": str(gps_2k_csv), "cache_dir": str(folder / "cache")},
            # OCR costs about a second per photo on 2 cores; its pipeline tests turn it on (tests/tools).
            "text": {"ocr": False},
        }
        for name, values in sections.items():
            tree.setdefault(name, {}).update(values)
        path = folder / "geosleuth.toml"
        path.write_text(Config.model_validate(tree).to_toml())
        return path

    return write


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray cluster per test session (2 CPUs, token authentication), shut down at the end.

    Started in this process (so in-process runs reuse the connection); yields its address for drivers
    in subprocesses (``--address``). Ray maps 127.0.0.1 to this machine's own address, so the traffic
    stays on this machine. The token travels in the environment only."""
    import ray

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")}
    # RAY_AUTH_MODE stays unset: a new local cluster then turns token authentication on (Ray 2.60's
    # default) with this token, and drivers started from here find it in their environment.
    os.environ.update(RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
