"""Gallery builds: image tables and folders (real tiny CLIP), resume after a crash, failures, input errors."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from geosleuth.errors import DataFileError, GalleryIndexError
from geosleuth.geo import ReverseGeocoder, haversine_km
from geosleuth.imageio import load_image
from geosleuth.index.build import build_store
from geosleuth.index.faiss_index import IndexSpec
from geosleuth.index.manifest import INDEX_FILE, METADATA_FILE, EncoderIdentity
from geosleuth.index.sources import EmbeddingsSource, ImageFolderSource, TableSource, open_source, table_items
from geosleuth.index.store import GalleryStore
from geosleuth.testing import photos
from geosleuth.testing.synthetic import COUNTRIES, JITTER_KM, MP16_COLUMNS
from geosleuth.types import GalleryNeighbor


class CountingEncoder:
    """Delegates to a real encoder and counts the images it embeds (to see what a resume re-does)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.model_id, self.dim = inner.name, inner.model_id, inner.dim
        self.weights_hash = inner.weights_hash
        self.images = 0

    def encode(self, images):
        self.images += len(images)
        return self.inner.encode(images)


class Crash(Exception):
    pass


def _all_records(store: GalleryStore) -> dict[str, GalleryNeighbor]:
    """Every gallery record by id, through the public search API (a flat store searches them all)."""
    return {n.id: n for n in store.search(np.ones(store.dim, np.float32), len(store))}


def crash_after(shard: int):
    def hook(done: int) -> None:
        if done == shard:
            raise Crash(f"simulated crash after shard {done}")

    return hook


def store_contents(path: Path) -> tuple[np.ndarray, list[tuple]]:
    index = faiss.read_index(str(path / INDEX_FILE))
    with sqlite3.connect(path / METADATA_FILE) as db:
        rows = db.execute("SELECT row, id, lat, lon, author, metadata FROM items ORDER BY row").fetchall()
    return index.reconstruct_n(0, index.ntotal), rows


# --- synthetic gallery --------------------------------------------------------------------------


def test_synthetic_gallery_is_mp16_shaped_and_on_land_in_each_country(synthetic_gallery: Path) -> None:
    table = pd.read_csv(synthetic_gallery, keep_default_na=False)
    assert tuple(table.columns) == MP16_COLUMNS
    assert len(table) == 6 * len(COUNTRIES)
    places = ReverseGeocoder().lookup_many(list(zip(table.LAT, table.LON, strict=True)))
    for row, place in zip(table.itertuples(), places, strict=True):
        code = row.IMG_ID.split("/")[1]
        assert row.country_code == place.country_code == code
        anchors = np.array(COUNTRIES[code].anchors)
        assert haversine_km(row.LAT, row.LON, anchors[:, 0], anchors[:, 1]).min() <= JITTER_KM + 0.1
        assert (synthetic_gallery.parent / row.IMG_ID).is_file()
    assert table.groupby("country_code").AUTHOR.nunique().eq(3).all()


# --- building from images -------------------------------------------------------------------------


def test_table_build_round_trip_finds_each_photo_first_with_its_record(
    tmp_path: Path, synthetic_gallery: Path, tiny_clip_encoder
) -> None:
    report = build_store(TableSource(synthetic_gallery), tmp_path / "store", encoder=tiny_clip_encoder, shard_size=16)
    table = pd.read_csv(synthetic_gallery, keep_default_na=False)
    assert report.count == len(table) and report.failures == []
    with GalleryStore.open(tmp_path / "store", image_encoder=tiny_clip_encoder) as store:
        for row in table.iloc[[0, 13, 40]].itertuples():
            photo = load_image(synthetic_gallery.parent / row.IMG_ID)
            query = tiny_clip_encoder.encode([photo.image]).retrieval[0]
            first = store.search(query, 3)[0]
            assert first.id == row.IMG_ID and first.similarity == pytest.approx(1.0, abs=1e-4)
            assert (first.lat, first.lon) == pytest.approx((row.LAT, row.LON))
            assert first.metadata["author"] == row.AUTHOR and first.metadata["city"] == row.city
            assert first.place is not None and first.place.country_code == row.country_code
            # Leakage-aware evaluation: the photographer's own photos can be left out.
            assert all(n.metadata["author"] != row.AUTHOR for n in store.search(query, 5, exclude_authors=[row.AUTHOR]))


def test_folder_build_reads_exif_gps_and_reports_each_unusable_file(
    tmp_path: Path, synthetic_gallery: Path, tiny_clip_encoder
) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(synthetic_gallery.parent / "images" / "FR", folder / "FR")
    shutil.copytree(synthetic_gallery.parent / "images" / "KE", folder / "KE")
    broken = {
        photos.write_truncated_jpeg(folder / "FR" / "cut.jpg"): "truncated or corrupt",
        photos.write_text_file(folder / "notes.jpg"): "not an image file",
        photos.write_empty_file(folder / "KE" / "empty.png"): "empty",
        photos.write_photo(folder / "KE" / "no_gps.jpg"): "no GPS position",
    }
    (folder / "README.txt").write_text("not a photo extension: ignored")
    report = build_store(ImageFolderSource(folder), tmp_path / "store", encoder=tiny_clip_encoder, shard_size=5)
    assert report.count == 12
    reasons = {Path(f.source): f.reason for f in report.failures}
    assert set(reasons) == set(broken)
    for path, words in broken.items():
        assert words in reasons[path]
    table = pd.read_csv(synthetic_gallery).set_index("IMG_ID")
    with GalleryStore.open(tmp_path / "store", image_encoder=tiny_clip_encoder) as store:
        assert {Path(f.source): f.reason for f in store.failures()} == reasons
        record = _all_records(store)["KE/KE_0002.jpg"]
        expected = table.loc["images/KE/KE_0002.jpg"]
        assert (record.lat, record.lon) == pytest.approx((expected.LAT, expected.LON), abs=1e-4)


def test_folder_where_nothing_is_usable_fails_clearly(tmp_path: Path, tiny_clip_encoder) -> None:
    photos.write_photo(tmp_path / "in" / "a.jpg")  # no GPS
    with pytest.raises(GalleryIndexError, match="no usable images.*no GPS"):
        build_store(ImageFolderSource(tmp_path / "in"), tmp_path / "store", encoder=tiny_clip_encoder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match="holds no image files"):
        build_store(ImageFolderSource(tmp_path / "empty"), tmp_path / "store2", encoder=tiny_clip_encoder)


# --- resume -----------------------------------------------------------------------------------------


def test_resume_after_a_crash_gives_the_same_store_as_an_uninterrupted_build(
    tmp_path: Path, synthetic_gallery: Path, tiny_clip_encoder
) -> None:
    source = TableSource(synthetic_gallery)
    build_store(source, tmp_path / "whole", encoder=tiny_clip_encoder, shard_size=8)

    encoder = CountingEncoder(tiny_clip_encoder)
    with pytest.raises(Crash):
        build_store(source, tmp_path / "crashed", encoder=encoder, shard_size=8, after_shard=crash_after(1))
    assert encoder.images == 16  # shards 0 and 1 were embedded and saved
    with pytest.raises(GalleryIndexError, match="unfinished build.*--resume"):
        GalleryStore.open(tmp_path / "crashed")
    with pytest.raises(GalleryIndexError, match="unfinished build.*--resume"):
        build_store(source, tmp_path / "crashed", encoder=encoder, shard_size=8)

    encoder.images = 0
    report = build_store(source, tmp_path / "crashed", encoder=encoder, shard_size=8, resume=True)
    assert encoder.images == 42 - 16 and report.reused == 16 and report.encoded == 26
    whole_vectors, whole_rows = store_contents(tmp_path / "whole")
    resumed_vectors, resumed_rows = store_contents(tmp_path / "crashed")
    np.testing.assert_array_equal(resumed_vectors, whole_vectors)
    assert resumed_rows == whole_rows


def test_resume_refuses_when_the_build_plan_changed(tmp_path: Path, synthetic_gallery: Path, tiny_clip_encoder) -> None:
    source = TableSource(synthetic_gallery)
    with pytest.raises(Crash):
        build_store(source, tmp_path / "s", encoder=tiny_clip_encoder, shard_size=8, after_shard=crash_after(0))
    with pytest.raises(GalleryIndexError, match="shard_size changed.*--overwrite"):
        build_store(source, tmp_path / "s", encoder=tiny_clip_encoder, shard_size=16, resume=True)


def test_a_built_store_needs_overwrite_and_resume_reindexes_without_embedding_again(
    tmp_path: Path, synthetic_gallery: Path, tiny_clip_encoder
) -> None:
    source = TableSource(synthetic_gallery)
    encoder = CountingEncoder(tiny_clip_encoder)
    build_store(source, tmp_path / "s", encoder=encoder, shard_size=16)
    with pytest.raises(GalleryIndexError, match="already holds a gallery store.*--overwrite"):
        build_store(source, tmp_path / "s", encoder=encoder, shard_size=16)
    encoder.images = 0
    build_store(source, tmp_path / "s", encoder=encoder, shard_size=16, resume=True, spec=IndexSpec("hnsw-sq"))
    assert encoder.images == 0
    with GalleryStore.open(tmp_path / "s") as store:
        assert store.manifest.index_type == "hnsw-sq" and len(store) == 42
    build_store(source, tmp_path / "s", encoder=encoder, shard_size=16, overwrite=True)
    assert encoder.images == 42


def test_a_non_empty_folder_that_is_not_a_store_is_left_alone(
    tmp_path: Path, synthetic_gallery: Path, tiny_clip_encoder
) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "thesis.docx").write_text("precious")
    with pytest.raises(GalleryIndexError, match="not empty and is not a gallery store"):
        build_store(TableSource(synthetic_gallery), tmp_path / "s", encoder=tiny_clip_encoder)
    assert (tmp_path / "s" / "thesis.docx").read_text() == "precious"


# --- tables and precomputed embeddings: errors name the file and row -----------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def test_missing_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="nowhere.csv.*does not exist"):
        open_source(tmp_path / "nowhere.csv")
    with pytest.raises(DataFileError, match="gallery table .*nowhere.csv.* does not exist"):
        table_items(tmp_path / "nowhere.csv")


def test_table_without_coordinates_lists_the_columns_it_has(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "g.csv", "IMG_ID,AUTHOR,LON\na.jpg,x,2.0")
    with pytest.raises(DataFileError) as err:
        table_items(csv)
    message = str(err.value)
    assert "g.csv" in message and "no latitude column" in message and "IMG_ID, AUTHOR, LON" in message


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("a.jpg,1,2\nb.jpg,3,4\nc.jpg,abc,5", r"row 3 \(line 4\).*'abc'"),
        ("a.jpg,1,2\nb.jpg,95,4", r"row 2 \(line 3\).*latitude 95.0 is outside \[-90, 90\]"),
        ("a.jpg,1,2\nb.jpg,,4", r"row 2 \(line 3\).*must be numbers"),
        ("a.jpg,1,2\nb.jpg,3,4\na.jpg,5,6", r"row 3 \(line 4\).*'a.jpg' repeats row 1"),
        ("a.jpg,1,2\n,3,4", r"row 2 \(line 3\).*image id is empty"),
    ],
)
def test_bad_table_values_name_the_file_and_row(tmp_path: Path, rows: str, expected: str) -> None:
    csv = write_csv(tmp_path / "gallery.csv", "IMG_ID,LAT,LON\n" + rows)
    with pytest.raises(DataFileError, match=r"gallery.csv.*" + expected):
        table_items(csv)


def test_embeddings_must_match_the_table_and_the_encoder(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "g.csv", "IMG_ID,LAT,LON\na,1,2\nb,3,4\nc,5,6")
    np.save(tmp_path / "e.npy", np.ones((2, 8), np.float32))
    identity = EncoderIdentity("enc", "m", "h" * 64, 8)
    with pytest.raises(DataFileError, match=r"e.npy.* has 2 rows but gallery table .*g.csv.* has 3"):
        EmbeddingsSource(tmp_path / "e.npy", csv, identity).items()
    with pytest.raises(DataFileError, match=r"e.npy.* has 8-d rows.* makes 16-d"):
        EmbeddingsSource(tmp_path / "e.npy", csv, EncoderIdentity("enc", "m", "h" * 64, 16)).array()


def test_unusable_embedding_rows_are_reported_and_the_rest_indexed(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    vectors[2] = np.nan
    vectors[4] = 0.0
    np.save(tmp_path / "e.npy", vectors)
    csv = write_csv(tmp_path / "g.csv", "IMG_ID,LAT,LON\n" + "\n".join(f"i{i},{i},{i}" for i in range(6)))
    source = EmbeddingsSource(tmp_path / "e.npy", csv, EncoderIdentity("enc", "m", "h" * 64, 8))
    report = build_store(source, tmp_path / "s")
    assert report.count == 4
    assert [(f.source.split("/")[-1], f.reason) for f in report.failures] == [
        ("e.npy row 3 (id i2)", "embedding is zero or not finite"),
        ("e.npy row 5 (id i4)", "embedding is zero or not finite"),
    ]
    with GalleryStore.open(tmp_path / "s") as store:
        assert store.search(vectors[3], 1)[0].id == "i3"


def test_parquet_tables_keep_metadata_types(tmp_path: Path) -> None:
    pd.DataFrame({
        "img_id": ["a", "b"], "latitude": [41.15, 38.72], "longitude": [-8.61, -9.14], "Author": ["x", "y"],
        "views": [10, 20], "city": ["Porto", None],
    }).to_parquet(tmp_path / "g.parquet")
    np.save(tmp_path / "e.npy", np.eye(2, 4, dtype=np.float32))
    identity = EncoderIdentity("e", "m", "h", 4)
    source = open_source(tmp_path / "g.parquet", embeddings=tmp_path / "e.npy", encoder=identity)
    build_store(source, tmp_path / "s")
    with GalleryStore.open(tmp_path / "s") as store:
        assert _all_records(store)["b"].metadata == {"author": "y", "views": 20}
        assert store.search(np.array([1, 0, 0, 0], np.float32), 1, exclude_authors=["y"])[0].id == "a"
