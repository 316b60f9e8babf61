"""The GPS gallery's approximate scans: their error bounds hold, and top_k stays exact on 100K points.

The gallery here has GeoCLIP's real shape, 100,000 x 512: 5,000 real location embeddings (every 20th
point of geoclip's shipped gallery) and 95,000 blends of two of them, renormalised, so the values
have the real ones' spread and common direction. Embedding all 100K real points would take tens of
seconds (bench/bench_gps_candidates.py measures on the real gallery).
"""

from __future__ import annotations

import numpy as np
import pytest

from geosleuth.index.encoders import LocationEncoder
from geosleuth.index.gps_gallery import GPSGallery, geoclip_gallery_csv, read_coordinates_csv
from geosleuth.index.gps_scan import Int8Scan, make_scan

POINTS = 100_000
REAL = 5_000
# What top_k promises for probabilities against the exact float64 softmax over the whole gallery
# (GPSGallery.top_k's docstring); the scan's per-row errors average out over the normaliser.
PROBABILITY_RTOL = 1e-3


@pytest.fixture(scope="module")
def real_shaped(geoclip_location_encoder: LocationEncoder) -> tuple[np.ndarray, np.ndarray, float]:
    coords = read_coordinates_csv(geoclip_gallery_csv())
    real = np.asarray(geoclip_location_encoder.encode(coords[:: POINTS // REAL][:REAL]), dtype=np.float32)
    rng = np.random.default_rng(7)
    first, second = rng.integers(REAL, size=(2, POINTS - REAL))
    weight = rng.uniform(0.5, 1.0, size=(POINTS - REAL, 1)).astype(np.float32)
    blends = weight * real[first] + (1 - weight) * real[second]
    blends /= np.linalg.norm(blends, axis=1, keepdims=True)
    embeddings = np.concatenate([real, blends])
    return coords[:POINTS], embeddings, geoclip_location_encoder.logit_scale


def queries(embeddings: np.ndarray) -> list[np.ndarray]:
    """Random directions (a flat softmax, all 100K points count) and photos near a gallery point
    (a peaked one); each also negated, so the query's largest element has either sign."""
    rng = np.random.default_rng(11)
    found = [rng.standard_normal(embeddings.shape[1]) for _ in range(3)]
    found += [embeddings[i] + rng.standard_normal(embeddings.shape[1]) / 45 for i in (3, 4_321, 77_777)]
    unit = [(q / np.linalg.norm(q)).astype(np.float32) for q in found]
    return unit + [-q for q in unit]


def exact_softmax(embeddings: np.ndarray, query: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    sims = embeddings.astype(np.float64) @ query.astype(np.float64)
    logits = scale * sims
    softmax = np.exp(logits - logits.max())
    return sims, softmax / softmax.sum()


def test_int8_scan_stays_within_its_stated_bound(real_shaped: tuple[np.ndarray, np.ndarray, float]) -> None:
    _, embeddings, _ = real_shaped
    scan = Int8Scan(embeddings)
    for query in queries(embeddings):
        approx, bound = scan.similarities(query)
        exact = embeddings.astype(np.float64) @ query.astype(np.float64)
        assert approx.shape == (POINTS,) and approx.dtype == np.float32
        assert np.abs(approx - exact).max() <= bound
        assert bound < 0.02  # tight enough that top_k rescores hundreds of points, not thousands


def test_int8_scan_rounds_only_the_embeddings_never_the_query(
    real_shaped: tuple[np.ndarray, np.ndarray, float],
) -> None:
    """The query's own rounding would be an error shared by every row (a shift of GeoCLIP's softmax
    normaliser); the scan must equal the per-row-rounded matrix times the query as given."""
    _, embeddings, _ = real_shaped
    scale = (np.abs(embeddings).max(axis=1) / np.float32(127.0)).astype(np.float32)
    rounded = np.rint(embeddings / scale[:, None]).astype(np.float64) * scale[:, None]
    scan = Int8Scan(embeddings)
    rng = np.random.default_rng(5)
    many = [q / np.linalg.norm(q) for q in rng.standard_normal((20, embeddings.shape[1])).astype(np.float32)]
    # All elements <= 0 and on a 1/1024 grid: one digit row represents it exactly, with no element at +63.
    grid = -rng.integers(0, 64, embeddings.shape[1]).astype(np.float32) / 1024
    grid[0] = -63 / 1024
    for query in [*queries(embeddings), *many, grid]:
        approx, _ = scan.similarities(query)
        np.testing.assert_allclose(approx, rounded @ query.astype(np.float64), rtol=0, atol=2e-5)


@pytest.mark.parametrize("scan", ["int8", "float16"])
def test_top_k_is_the_exact_float32_ranking_with_softmax_probabilities(
    real_shaped: tuple[np.ndarray, np.ndarray, float], scan: str
) -> None:
    coords, embeddings, scale = real_shaped
    gallery = GPSGallery(
        coords, embeddings, logit_scale=scale, source="real-shaped", encoder_name="geoclip",
        encoder_weights_hash="0", scan=scan,
    )
    try:
        assert gallery.scan_variant == scan
        for query in queries(embeddings):
            top = gallery.top_k(query, 20)

            sims, softmax = exact_softmax(embeddings, query, scale)
            order = np.lexsort((np.arange(POINTS), -sims))[:20]
            np.testing.assert_array_equal([(c.lat, c.lon) for c in top], coords[order])
            np.testing.assert_allclose([c.similarity for c in top], sims[order], atol=1e-6)
            np.testing.assert_allclose([c.probability for c in top], softmax[order], rtol=PROBABILITY_RTOL)
    finally:
        gallery.close()


def test_auto_scans_large_galleries_in_int8_and_small_ones_exactly(
    real_shaped: tuple[np.ndarray, np.ndarray, float],
) -> None:
    _, embeddings, _ = real_shaped
    assert make_scan(embeddings).name == "int8"
    small = make_scan(embeddings[:2_000])
    assert small.name == "float32"
    approx, bound = small.similarities(embeddings[5])
    assert bound == 0.0 and approx[5] == pytest.approx(1.0, abs=1e-6)


def test_unknown_scan_is_refused_when_the_gallery_is_made(
    real_shaped: tuple[np.ndarray, np.ndarray, float],
) -> None:
    coords, embeddings, _ = real_shaped
    with pytest.raises(ValueError, match="unknown GPS-gallery scan 'int4'.*'int8'"):
        GPSGallery(coords[:10], embeddings[:10], logit_scale=1.0, source="x", encoder_name="g",
                   encoder_weights_hash="0", scan="int4")
    with pytest.raises(ValueError, match="unknown GPS-gallery scan 'int4'"):
        make_scan(embeddings[:10], "int4")


def test_near_ties_beyond_the_first_candidates_are_ranked_exactly() -> None:
    """600 copies of one embedding nudged far below int8's resolution: the scan cannot order them, more
    than the 256 first candidates are within its bound of the 20th, and top_k must rescore them all."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((50_000, 512)).astype(np.float32)
    base = vectors[10] / np.linalg.norm(vectors[10])
    vectors[1_000:1_600] = base + 2e-4 * rng.standard_normal((600, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    coords = np.stack([rng.uniform(-80, 80, 50_000), rng.uniform(-180, 179, 50_000)], axis=1)
    gallery = GPSGallery(coords, vectors, logit_scale=39.7, source="ties", encoder_name="r", encoder_weights_hash="0")
    try:
        assert gallery.scan_variant == "int8"
        query = base + 0.02 * rng.standard_normal(512).astype(np.float32)
        top = gallery.top_k(query, 20)
        sims, softmax = exact_softmax(vectors, query / np.linalg.norm(query), 39.7)
        order = np.lexsort((np.arange(len(sims)), -sims))[:20]
        np.testing.assert_array_equal([(c.lat, c.lon) for c in top], coords[order])
        np.testing.assert_allclose([c.probability for c in top], softmax[order], rtol=PROBABILITY_RTOL)
    finally:
        gallery.close()
