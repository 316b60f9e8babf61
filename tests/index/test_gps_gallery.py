"""GPS gallery with GeoCLIP's real location encoder: cached embeddings, top-k, CSV validation.

The galleries here are a few thousand points taken from geoclip's shipped 100K gallery: embedding
all 100K takes tens of seconds on a CPU (bench/bench_gps_candidates.py covers that size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geosleuth.errors import DataFileError
from geosleuth.index.encoders import LocationEncoder
from geosleuth.index.gps_gallery import (
    GEOCLIP_GALLERY,
    GPSGallery,
    geoclip_gallery_csv,
    read_coordinates_csv,
    score_locations,
)

GALLERY_SIZE = 2000


class CountingLocationEncoder:
    """Delegates to the real encoder and counts how often the gallery is (re-)embedded."""

    def __init__(self, inner: LocationEncoder, weights_hash: str | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.logit_scale = inner.logit_scale
        self.weights_hash = weights_hash or inner.weights_hash
        self.calls = 0

    def encode(self, latlon: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.encode(latlon)


@pytest.fixture(scope="module")
def gallery_coords() -> np.ndarray:
    return read_coordinates_csv(geoclip_gallery_csv())[:GALLERY_SIZE]


@pytest.fixture(scope="module")
def gallery_csv(tmp_path_factory: pytest.TempPathFactory, gallery_coords: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("gps") / "gallery.csv"
    rows = "\n".join(f"{float(lat)!r},{float(lon)!r}" for lat, lon in gallery_coords)
    path.write_text(f"Latitude,LONGITUDE\n{rows}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gallery(gallery_csv: Path, geoclip_location_encoder: LocationEncoder) -> GPSGallery:
    return GPSGallery.load(str(gallery_csv), geoclip_location_encoder, cache_dir=None)


def test_embeddings_are_cached_and_reused(
    tmp_path: Path, gallery_csv: Path, geoclip_location_encoder: LocationEncoder, gallery: GPSGallery
) -> None:
    counting = CountingLocationEncoder(geoclip_location_encoder)
    first = GPSGallery.load(str(gallery_csv), counting, cache_dir=tmp_path)
    second = GPSGallery.load(str(gallery_csv), counting, cache_dir=tmp_path)

    assert counting.calls == 1
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_allclose(second.embeddings, gallery.embeddings, atol=1e-6)
    files = sorted(p.suffix for p in (tmp_path / "gps_gallery").iterdir())
    assert files == [".json", ".npy"]  # no temporary files left behind


def test_cache_is_keyed_by_weights_and_content(
    tmp_path: Path, gallery_csv: Path, gallery_coords: np.ndarray, geoclip_location_encoder: LocationEncoder
) -> None:
    counting = CountingLocationEncoder(geoclip_location_encoder)
    GPSGallery.load(str(gallery_csv), counting, cache_dir=tmp_path)
    GPSGallery.from_coordinates(gallery_coords[:500], counting, cache_dir=tmp_path)
    assert counting.calls == 2  # other points: other entry

    retrained = CountingLocationEncoder(geoclip_location_encoder, weights_hash="0" * 64)
    GPSGallery.load(str(gallery_csv), retrained, cache_dir=tmp_path)
    assert retrained.calls == 1  # other weights: recomputed, not reused


def test_corrupt_cache_is_recomputed(
    tmp_path: Path, gallery_csv: Path, geoclip_location_encoder: LocationEncoder, gallery: GPSGallery
) -> None:
    counting = CountingLocationEncoder(geoclip_location_encoder)
    GPSGallery.load(str(gallery_csv), counting, cache_dir=tmp_path)
    (array_file,) = (tmp_path / "gps_gallery").glob("*.npy")
    array_file.write_bytes(array_file.read_bytes()[:1000])

    reloaded = GPSGallery.load(str(gallery_csv), counting, cache_dir=tmp_path)
    assert counting.calls == 2
    np.testing.assert_allclose(reloaded.embeddings, gallery.embeddings, atol=1e-6)


@pytest.mark.parametrize("index", [0, 777, GALLERY_SIZE - 1])
def test_a_coordinates_own_embedding_ranks_it_first(
    gallery: GPSGallery, gallery_coords: np.ndarray, index: int
) -> None:
    top = gallery.top_k(gallery.embeddings[index], 5)

    assert len(top) == 5
    assert (top[0].lat, top[0].lon) == pytest.approx(tuple(gallery_coords[index]), abs=1e-9)
    assert top[0].similarity == pytest.approx(1.0, abs=1e-5)
    sims = [c.similarity for c in top]
    assert sims == sorted(sims, reverse=True)
    probs = [c.probability for c in top]
    assert all(p is not None and 0.0 < p <= 1.0 for p in probs)
    assert probs == sorted(probs, reverse=True)


def test_top_k_matches_a_full_sort_with_softmax_probabilities(gallery: GPSGallery) -> None:
    rng = np.random.default_rng(3)
    query = rng.standard_normal(512).astype(np.float32)
    query /= np.linalg.norm(query)

    top = gallery.top_k(query, 10)

    sims = gallery.embeddings.astype(np.float64) @ query
    order = np.argsort(-sims, kind="stable")[:10]
    np.testing.assert_allclose([(c.lat, c.lon) for c in top], gallery.coordinates[order], atol=1e-9)
    logits = gallery.logit_scale * sims
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([c.probability for c in top], softmax[order], rtol=1e-4)


def test_top_k_sizes(gallery: GPSGallery) -> None:
    query = gallery.embeddings[1]
    assert gallery.top_k(query, 0) == []
    assert len(gallery.top_k(query, GALLERY_SIZE + 50)) == GALLERY_SIZE
    assert len(gallery.top_k(query[None, :], 3)) == 3
    with pytest.raises(ValueError, match="k must be"):
        gallery.top_k(query, -1)
    with pytest.raises(ValueError, match="shape"):
        gallery.top_k(np.ones(768, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="zero"):
        gallery.top_k(np.zeros(512, dtype=np.float32), 3)


def test_a_query_leaves_torch_threads_of_later_threads_alone(gallery: GPSGallery) -> None:
    """The scan's worker must not change torch's thread count: every thread started later in the
    process (the encoders', the VLM's) would inherit it and run on one core."""
    import threading

    import torch

    cores = torch.get_num_threads()
    gallery.top_k(gallery.embeddings[2], 5)
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [cores]


def test_score_locations_agrees_with_the_gallery(
    gallery: GPSGallery, gallery_coords: np.ndarray, geoclip_location_encoder: LocationEncoder
) -> None:
    query = gallery.embeddings[42]
    picks = [42, 7, 1500]
    scores = score_locations(query, gallery_coords[picks], geoclip_location_encoder)
    assert scores.shape == (3,)
    np.testing.assert_allclose(scores, gallery.similarities(query)[picks], atol=1e-5)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)


def test_geoclip_source_is_the_shipped_100k_gallery() -> None:
    coords = read_coordinates_csv(geoclip_gallery_csv())
    assert coords.shape == (100_000, 2)
    assert np.abs(coords[:, 0]).max() <= 90 and np.abs(coords[:, 1]).max() <= 180
    assert GEOCLIP_GALLERY == "geoclip"


# --- CSV validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", ["lat,lon", "LAT,LON", "Latitude,Longitude", "lat,lng", " latitude , long "]
)
def test_csv_column_names_are_recognised(tmp_path: Path, header: str) -> None:
    path = tmp_path / "g.csv"
    path.write_text(f"id,{header}\na,10.5,-20.25\nb,-45,190\n", encoding="utf-8")
    coords = read_coordinates_csv(path)
    np.testing.assert_allclose(coords, [[10.5, -20.25], [-45.0, -170.0]])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "g.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n", "no latitude column"),
        ("lat,latitude,lon\n1,2,3\n", "several latitude columns"),
        ("lat,lon\n", "has no rows"),
        ("", "not a readable CSV"),
        ("lat,lon\n1,2\n3,4\nnorth,5\n", "line 4"),
        ("lat,lon\n1,2\n95,4\n", "line 3"),
        ("lat,lon\n1,2\n3,\n", "line 3"),
    ],
)
def test_bad_csv_raises_data_file_error_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataFileError, match=message) as info:
        read_coordinates_csv(path)
    assert str(path) in str(info.value)


def test_bad_value_message_quotes_it(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="'north'"):
        read_coordinates_csv(_write(tmp_path, "lat,lon\nnorth,5\n"))
    with pytest.raises(DataFileError, match="latitude 95.0 is outside"):
        read_coordinates_csv(_write(tmp_path, "lat,lon\n95,5\n"))


def test_missing_csv_is_named(tmp_path: Path, geoclip_location_encoder: LocationEncoder) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataFileError, match="does not exist") as info:
        GPSGallery.load(str(missing), geoclip_location_encoder, cache_dir=None)
    assert str(missing) in str(info.value)


class RandomUnitEncoder:
    """A fast stand-in location encoder (random unit vectors per point) for gallery-size tests."""

    name = "random-unit"
    dim = 512
    logit_scale = 39.7
    weights_hash = "0" * 64

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, latlon: np.ndarray) -> np.ndarray:
        self.calls += 1
        rng = np.random.default_rng(len(latlon))
        vectors = rng.standard_normal((len(latlon), self.dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_first_run_says_it_embeds_once_and_later_runs_load_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    coords = np.stack([rng.uniform(-80, 80, 60_000), rng.uniform(-180, 179, 60_000)], axis=1)
    encoder = RandomUnitEncoder()
    with caplog.at_level("WARNING", logger="geosleuth.index.gps_gallery"):
        GPSGallery.from_coordinates(coords, encoder, cache_dir=tmp_path, source="big")
    (note,) = [r.getMessage() for r in caplog.records]
    assert "60,000 points once, about 12 s" in note and str(tmp_path) in note
    caplog.clear()
    with caplog.at_level("WARNING", logger="geosleuth.index.gps_gallery"):
        again = GPSGallery.from_coordinates(coords, encoder, cache_dir=tmp_path, source="big")
    assert encoder.calls == 1 and caplog.records == []
    assert len(again) == 60_000


def test_top_k_over_a_large_gallery_is_exactly_the_float32_ranking() -> None:
    rng = np.random.default_rng(1)
    coords = np.stack([rng.uniform(-80, 80, 50_000), rng.uniform(-180, 179, 50_000)], axis=1)
    gallery = GPSGallery.from_coordinates(coords, RandomUnitEncoder(), source="big")
    # Near-ties on purpose: copies of one embedding, nudged below the half-precision resolution.
    base = gallery.embeddings[10].copy()
    for i, row in enumerate(range(100, 130)):
        nudged = base + 1e-5 * (i + 1) * rng.standard_normal(512).astype(np.float32)
        gallery.embeddings[row] = nudged / np.linalg.norm(nudged)
    gallery = GPSGallery(coords, gallery.embeddings, logit_scale=39.7, source="big", encoder_name="r",
                         encoder_weights_hash="0")
    query = base + 0.01 * rng.standard_normal(512).astype(np.float32)
    top = gallery.top_k(query, 20)
    exact = gallery.embeddings.astype(np.float64) @ (query / np.linalg.norm(query))
    order = np.lexsort((np.arange(len(exact)), -exact))[:20]
    np.testing.assert_array_equal([(c.lat, c.lon) for c in top], coords[order])
    logits = 39.7 * exact
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([c.probability for c in top], softmax[order], rtol=1e-3)
