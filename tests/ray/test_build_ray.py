"""`geosleuth index build --engine ray`: shards embedded by Ray actors, the same store as the local build."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
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
