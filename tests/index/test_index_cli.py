"""`geosleuth index build|info|search` with the real tiny CLIP encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from geosleuth.cli import app
from geosleuth.index.manifest import EncoderIdentity
from geosleuth.index.sources import write_encoder_sidecar
from geosleuth.testing import photos

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def settings(tiny_clip_dir: Path) -> list[str]:
    return ["--set", f"encoders.image_model={tiny_clip_dir}", "--set", "encoders.device=cpu"]


@pytest.fixture(scope="module")
def built_store(tmp_path_factory: pytest.TempPathFactory, synthetic_gallery: Path, settings: list[str]) -> Path:
    store = tmp_path_factory.mktemp("cli") / "store"
    result = runner.invoke(app, [*settings, "index", "build", str(synthetic_gallery), "--out", str(store)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "built" in result.stderr and "42 images" in result.stderr
    assert "embedding images" in result.stderr and "img/s" in result.stderr  # the progress bar
    return store


def test_info_shows_what_the_store_holds(built_store: Path, tiny_clip_dir: Path) -> None:
    result = runner.invoke(app, ["index", "info", str(built_store), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["count"] == 42 and manifest["index_type"] == "flat" and manifest["dim"] == 768
    assert manifest["encoder"]["name"] == "clip+geoclip" and manifest["encoder"]["model_id"] == str(tiny_clip_dir)
    table = runner.invoke(app, ["index", "info", str(built_store)], env=WIDE)
    assert table.exit_code == 0 and "clip+geoclip" in table.stdout
    assert "3,07" in table.stdout and "B/image" in table.stdout  # 768 float32 + the file header


def test_search_json_finds_the_query_photo_first(
    built_store: Path, synthetic_gallery: Path, settings: list[str]
) -> None:
    photo = synthetic_gallery.parent / "images/JP/JP_0004.jpg"
    args = [*settings, "index", "search", str(built_store), str(photo), "-k", "4", "--json", "--dissimilar", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [len(out["neighbors"]), len(out["dissimilar"])] == [4, 2]
    first = out["neighbors"][0]
    assert first["id"] == "images/JP/JP_0004.jpg" and first["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert first["place"]["country_code"] == "JP" and first["metadata"]["author"] == "jp-author-1"
    assert out["dissimilar"][0]["similarity"] <= out["neighbors"][-1]["similarity"]

    excluded = runner.invoke(app, [*args, "--exclude-author", "jp-author-1"])
    assert excluded.exit_code == 0, excluded.output
    assert all(n["metadata"]["author"] != "jp-author-1" for n in json.loads(excluded.stdout)["neighbors"])


def test_search_table_output(built_store: Path, synthetic_gallery: Path, settings: list[str]) -> None:
    photo = synthetic_gallery.parent / "images/FR/FR_0000.jpg"
    result = runner.invoke(app, [*settings, "index", "search", str(built_store), str(photo), "-k", "3"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "3 most similar" in result.stdout and "images/FR/FR_0000.jpg" in result.stdout
    assert "Europe > France" in result.stdout


def test_folder_build_with_broken_photos_lists_them_and_exits_1(
    tmp_path: Path, synthetic_gallery: Path, settings: list[str]
) -> None:
    shutil.copytree(synthetic_gallery.parent / "images" / "BR", tmp_path / "photos")
    bad = photos.write_text_file(tmp_path / "photos" / "bad.jpg")
    result = runner.invoke(app, [*settings, "index", "build", str(tmp_path / "photos"), "-o", str(tmp_path / "s")],
                           env=WIDE)
    assert result.exit_code == 1, result.output
    assert "6 images" in result.stderr and "1 input(s) could not be added" in result.stderr
    assert f"{bad}: not an image file" in result.stderr


def test_interrupted_build_is_resumed_from_the_command_line(
    tmp_path: Path, synthetic_gallery: Path, settings: list[str], tiny_clip_encoder
) -> None:
    from geosleuth.index.build import build_store
    from geosleuth.index.sources import TableSource

    def crash(shard: int) -> None:
        if shard == 2:
            raise KeyboardInterrupt  # what Ctrl-C during shard 3 looks like

    store = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        build_store(TableSource(synthetic_gallery), store, encoder=tiny_clip_encoder, shard_size=8, after_shard=crash)
    args = [*settings, "index", "build", str(synthetic_gallery), "--out", str(store), "--shard-size", "8"]
    refused = runner.invoke(app, args, env=WIDE)
    assert refused.exit_code == 2
    assert "unfinished build (3 shards done)" in refused.stderr and "--resume" in refused.stderr
    resumed = runner.invoke(app, [*args, "--resume"], env=WIDE)
    assert resumed.exit_code == 0, resumed.output
    assert "42 images" in resumed.stderr and "24 items' embeddings reused" in resumed.stderr


def test_precomputed_embeddings_with_their_encoder_description(
    tmp_path: Path, synthetic_gallery: Path, settings: list[str], built_store: Path
) -> None:
    table = pd.read_csv(synthetic_gallery)
    vectors = np.random.default_rng(0).standard_normal((len(table), 768)).astype(np.float32)
    np.save(tmp_path / "emb.npy", vectors)
    write_encoder_sidecar(tmp_path / "emb.npy", EncoderIdentity("other-encoder", "elsewhere", "c" * 64, 768))
    store = tmp_path / "s"
    args = ["index", "build", str(synthetic_gallery), "--embeddings", str(tmp_path / "emb.npy"), "-o", str(store)]
    built = runner.invoke(app, args)
    assert built.exit_code == 0, built.output
    # Searching it with the configured (tiny CLIP) encoder must refuse: another embedding space.
    photo = synthetic_gallery.parent / "images/FR/FR_0000.jpg"
    result = runner.invoke(app, [*settings, "index", "search", str(store), str(photo)], env=WIDE)
    assert result.exit_code == 2
    assert "was built with image encoder 'other-encoder'" in result.stderr and "Rebuild" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["index", "build", "missing.csv", "--out", "s"], "gallery table 'missing.csv' does not exist"),
        (["index", "info", "no-store"], "gallery store 'no-store' does not exist"),
        (["index", "build", "x.csv", "--out", "s", "--index-type", "lsh"], "Invalid value"),
    ],
)
def test_input_errors_are_one_clean_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output


def test_bad_csv_row_is_named_on_the_command_line(tmp_path: Path, settings: list[str]) -> None:
    csv = tmp_path / "g.csv"
    csv.write_text("IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,north,3\n")
    result = runner.invoke(app, [*settings, "index", "build", str(csv), "--out", str(tmp_path / "s")], env=WIDE)
    assert result.exit_code == 2
    assert "row 2 (line 3)" in result.stderr and "'north'" in result.stderr
