"""`geosleuth index build --engine ray`: shards embedded by Ray actors, the same store as the local build."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from geosleuth.cli import app

runner = CliRunner()


def store_contents(store: Path) -> tuple[dict, np.ndarray, list[tuple]]:
    import faiss

    manifest = json.loads((store / "manifest.json").read_text())
    manifest["build"].pop("seconds")
    manifest.pop("created_at")
    index = faiss.read_index(str(store / "index.faiss"))
    with sqlite3.connect(store / "metadata.sqlite") as db:
        items = db.execute("SELECT row, id, lat, lon, author, metadata FROM items ORDER BY row").fetchall()
    return manifest, index.reconstruct_n(0, index.ntotal), items


def test_ray_build_makes_the_local_builds_store(ray_cluster, tiny_clip_dir, tmp_path):
    from geosleuth.testing import photos
    from geosleuth.testing.synthetic import make_synthetic_gallery

    table = make_synthetic_gallery(tmp_path / "gallery", n_per_country=3, countries=("FR", "JP", "BR", "KE"))
    photos.write_text_file(table.parent / "images/FR/FR_0001.png")  # unreadable: a failure, not fatal
    settings = ["--set", f"encoders.image_model={tiny_clip_dir}", "--set", "encoders.device=cpu"]
    stores = {}
    for engine in ("local", "ray"):
        stores[engine] = tmp_path / engine
        args = [*settings, "index", "build", str(table), "--out", str(stores[engine]), "--shard-size", "4",
                "--engine", engine]
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 1, result.output  # one input could not be added
        assert "11 images" in result.stderr and "FR_0001.png" in result.stderr

    local, ray_built = store_contents(stores["local"]), store_contents(stores["ray"])
    assert ray_built[0] == local[0]
    np.testing.assert_array_equal(ray_built[1], local[1])
    assert ray_built[2] == local[2]
    info = runner.invoke(app, ["index", "info", str(stores["ray"]), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["count"] == 11


def test_ray_resume_embeds_only_the_missing_shards_and_gives_the_whole_store(ray_cluster, tiny_clip_dir, tmp_path):
    from geosleuth.config import EncoderConfig
    from geosleuth.index.build import build_store
    from geosleuth.index.build_ray import RayBuildOptions, ray_shard_engine
    from geosleuth.index.encoders import create_image_encoder
    from geosleuth.index.manifest import EncoderIdentity
    from geosleuth.index.sources import TableSource
    from geosleuth.testing.synthetic import make_synthetic_gallery

    source = TableSource(make_synthetic_gallery(tmp_path / "gallery", n_per_country=3, countries=("FR", "JP", "BR")))
    settings = EncoderConfig(image_model=str(tiny_clip_dir), device="cpu")
    encoder = create_image_encoder(settings)
    build_store(source, tmp_path / "whole", encoder=encoder, shard_size=2)

    class Crash(Exception):
        pass

    def crash(shard: int) -> None:
        raise Crash

    engine = ray_shard_engine(settings, EncoderIdentity.of(encoder), RayBuildOptions(actors=2))
    with pytest.raises(Crash):  # the driver stops after committing its first shard
        build_store(source, tmp_path / "resumed", encoder=encoder, shard_size=2, engine=engine, after_shard=crash)
    report = build_store(source, tmp_path / "resumed", encoder=encoder, shard_size=2, engine=engine, resume=True)
    assert (report.reused, report.encoded) == (2, 7)
    whole, resumed = store_contents(tmp_path / "whole"), store_contents(tmp_path / "resumed")
    np.testing.assert_array_equal(resumed[1], whole[1])
    assert resumed[2] == whole[2]
