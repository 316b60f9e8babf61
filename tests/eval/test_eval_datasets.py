"""Ground-truth loaders: IM2GPS3K's swapped header, YFCC4K, generic CSV/JSONL, missing images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from geosleuth.errors import DataFileError
from geosleuth.eval.datasets import (
    DatasetWarning,
    detect_swapped_lat_lon,
    load_generic,
    load_im2gps3k,
    load_yfcc4k,
)

# (id, author, lat, lon): Sydney's longitude is beyond ±90, so the values decide the header.
ROWS = [
    ("1_a.jpg", "alice", 48.8566, 2.3522),
    ("2_b.jpg", "bob", -33.8688, 151.2093),
    ("3_c.jpg", "carol", 40.7128, -74.0060),
]


def _write_im2gps(path: Path, rows: list[tuple[str, str, float, float]], *, swapped: bool = False) -> Path:
    lines = ["IMG_ID,AUTHOR,LAT,LON,S3_Label"]
    for image_id, author, lat, lon in rows:
        first, second = (lon, lat) if swapped else (lat, lon)
        lines.append(f"{image_id},{author},{first},{second},3")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_im2gps3k_plain_header(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_im2gps3k(_write_im2gps(tmp_path / "m.csv", ROWS))
    assert not [w for w in record if issubclass(w.category, DatasetWarning)]
    assert data.warnings == []
    assert not data.swapped_lat_lon
    assert [(r.id, r.author, r.lat, r.lon) for r in data.records] == ROWS
    assert data.records[0].image_path is None


def test_im2gps3k_swapped_header_is_detected_and_fixed(tmp_path: Path) -> None:
    with pytest.warns(DatasetWarning, match="swapped"):
        data = load_im2gps3k(_write_im2gps(tmp_path / "m.csv", ROWS, swapped=True))
    assert data.swapped_lat_lon
    assert [(r.lat, r.lon) for r in data.records] == [(lat, lon) for _, _, lat, lon in ROWS]
    assert any("swapped" in note for note in data.warnings)


def test_ambiguous_values_trust_the_header_and_say_so(tmp_path: Path) -> None:
    europe = [("1.jpg", "a", 48.85, 2.35), ("2.jpg", "b", 41.9, 12.5)]
    with pytest.warns(DatasetWarning, match="cannot tell"):
        data = load_im2gps3k(_write_im2gps(tmp_path / "m.csv", europe))
    assert not data.swapped_lat_lon
    assert data.records[1].lat == 41.9
    # The caller can override when they know the copy is swapped.
    with pytest.warns(DatasetWarning, match="as requested"):
        forced = load_im2gps3k(tmp_path / "m.csv", swapped=True)
    assert forced.records[1].lat == 12.5


def test_detect_rules() -> None:
    assert detect_swapped_lat_lon([10, 20], [100, -170]) == (False, None)
    assert detect_swapped_lat_lon([100, -170], [10, 20])[0] is True
    with pytest.raises(DataFileError, match="neither holds latitudes"):
        detect_swapped_lat_lon([100, 10], [120, 10], source="f.csv")


def test_missing_column_and_bad_value_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("IMG_ID,LAT,LON\n1.jpg,1,2\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"m\.csv: missing column\(s\) AUTHOR"):
        load_im2gps3k(bad)
    bad.write_text("IMG_ID,AUTHOR,LAT,LON\n1.jpg,a,1,2\n2.jpg,b,north,2\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"m\.csv, line 3: LAT 'north' is not a number"):
        load_im2gps3k(bad)


def test_missing_images_are_listed_not_fatal(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "1_a.jpg").write_bytes(b"\xff\xd8\xff")
    (images / "2_b.jpg").write_bytes(b"")  # empty: unusable
    with pytest.warns(DatasetWarning, match="2 of 3 images are missing or unreadable"):
        data = load_im2gps3k(_write_im2gps(tmp_path / "m.csv", ROWS), images)
    assert data.missing_images == ["2_b.jpg", "3_c.jpg"]
    assert len(data.records) == 3  # still in the benchmark: they will count as failures
    assert data.records[0].image_path == images / "1_a.jpg"


def test_yfcc4k_bare_ids_find_jpg_and_author_is_optional(tmp_path: Path) -> None:
    meta = tmp_path / "yfcc4k_places365.csv"
    meta.write_text("IMG_ID,LAT,LON\n1000,35.68,139.69\n1001,-22.9,-43.2\n", encoding="utf-8")
    (tmp_path / "1000.jpg").write_bytes(b"x")
    with pytest.warns(DatasetWarning, match="1 of 2 images"):
        data = load_yfcc4k(meta, tmp_path)
    assert data.records[0].image_path == tmp_path / "1000.jpg"
    assert data.records[0].author is None
    assert data.missing_images == ["1001"]


def test_generic_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "truth.csv"
    csv_file.write_text("ID,Latitude,Longitude,Author\nx,1.5,200,ann\ny,-2,3,\n", encoding="utf-8")
    data = load_generic(csv_file)
    assert [(r.id, r.lat, r.lon, r.author) for r in data.records] == [("x", 1.5, -160.0, "ann"), ("y", -2.0, 3.0, None)]

    jsonl = tmp_path / "truth.jsonl"
    lines = [json.dumps({"id": 7, "lat": 10, "lon": 20}), "", json.dumps({"id": "b", "lat": 0, "lon": 0})]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = load_generic(jsonl, tmp_path, check_images=False)
    assert [r.id for r in data.records] == ["7", "b"]
    assert data.records[0].image_path == tmp_path / "7"


def test_generic_rejects_out_of_range_and_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("id,lat,lon\na,120,10\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"t\.csv, line 2: .*swapped"):
        load_generic(f)
    f.write_text("id,lat,lon\na,1,1\na,2,2\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="already appears on line 2"):
        load_generic(f)
    f.write_text("name,lat,lon\na,1,1\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="no id column"):
        load_generic(f)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="does not exist"):
        load_im2gps3k(tmp_path / "nope.csv")
