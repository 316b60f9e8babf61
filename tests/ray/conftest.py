"""One local Ray cluster per test session (127.0.0.1, 2 CPUs, token authentication), shared by the Ray
engine tests and shut down at the end; photos and a tiny-model configuration for them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Starts Ray in this process (so in-process runs reuse the connection) and yields its address
    for drivers in subprocesses (``--address``). The token travels in the environment only."""
    import ray

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")}
    # RAY_AUTH_MODE stays unset: a new local cluster then turns token authentication on (Ray 2.60's
    # default) with this token, and drivers started from here find it in their environment.
    os.environ.update(RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        from geosleuth.ray_session import quiet_ray_data

        quiet_ray_data()
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
