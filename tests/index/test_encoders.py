"""Encoders: the tiny CLIP image encoder (+ GeoCLIP head), the real GeoCLIP location encoder, the registry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geosleuth.config import EncoderConfig
from geosleuth.errors import ConfigError, InvalidCoordinateError, ModelNotAvailableError
from geosleuth.index import encoders
from geosleuth.index.encoders import (
    ImageEmbeddings,
    ImageEncoder,
    LocationEncoder,
    create_image_encoder,
    create_location_encoder,
    fingerprint_files,
    register_image_encoder,
)
from geosleuth.testing.photos import pattern_image
from geosleuth.testing.tiny_clip import build_tiny_clip


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    out = [pattern_image((48, 32)), Image.new("RGB", (30, 60), (0, 120, 40))]
    while len(out) < n:
        out.append(Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    return out[:n]


# --- image encoder -----------------------------------------------------------------------------


def test_clip_geoclip_encoder_gives_both_normalised_embeddings(tiny_clip_encoder: ImageEncoder) -> None:
    emb = tiny_clip_encoder.encode(_images(3))
    assert isinstance(tiny_clip_encoder, ImageEncoder)
    assert tiny_clip_encoder.dim == 768
    assert emb.retrieval.shape == (3, 768) and emb.retrieval.dtype == np.float32
    assert emb.geoclip is not None
    assert emb.geoclip.shape == (3, 512) and emb.geoclip.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb.retrieval, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.geoclip, axis=1), 1.0, atol=1e-5)


def test_same_image_same_embedding_different_images_differ(tiny_clip_encoder: ImageEncoder) -> None:
    first = tiny_clip_encoder.encode(_images(3))
    again = tiny_clip_encoder.encode(_images(3))
    np.testing.assert_array_equal(first.retrieval, again.retrieval)
    assert first.geoclip is not None and again.geoclip is not None
    np.testing.assert_array_equal(first.geoclip, again.geoclip)
    assert float(first.retrieval[0] @ first.retrieval[1]) < 0.99


def test_batched_equals_one_at_a_time(tiny_clip_encoder: ImageEncoder) -> None:
    images = _images(6)  # batch_size 4 in the fixture: one full batch and one partial batch
    batched = tiny_clip_encoder.encode(images)
    single = [tiny_clip_encoder.encode([im]) for im in images]
    np.testing.assert_allclose(batched.retrieval, np.concatenate([s.retrieval for s in single]), atol=1e-5)
    assert batched.geoclip is not None
    np.testing.assert_allclose(batched.geoclip, np.concatenate([s.geoclip for s in single]), atol=1e-5)


def test_empty_input_gives_empty_embeddings(tiny_clip_encoder: ImageEncoder) -> None:
    emb = tiny_clip_encoder.encode([])
    assert emb.retrieval.shape == (0, 768)
    assert emb.geoclip is not None and emb.geoclip.shape == (0, 512)


def test_non_rgb_input_is_converted(tiny_clip_encoder: ImageEncoder) -> None:
    rgb = pattern_image((48, 32))
    emb = tiny_clip_encoder.encode([rgb.convert("RGBA"), rgb])
    np.testing.assert_allclose(emb.retrieval[0], emb.retrieval[1], atol=1e-6)


def test_geoclip_embedding_matches_geoclips_own_image_encoder(
    tiny_clip_encoder: ImageEncoder, tiny_clip_dir: Path
) -> None:
    """Same CLIP + GeoCLIP's shipped head through geoclip's own code gives the same embedding."""
    import torch
    from geoclip import ImageEncoder as GeoCLIPImageEncoder

    reference = GeoCLIPImageEncoder(clip_path=str(tiny_clip_dir)).eval()
    head_file = encoders.geoclip_weights_file("image_encoder_mlp_weights.pth")
    reference.mlp.load_state_dict(torch.load(head_file, map_location="cpu", weights_only=True))
    images = _images(3)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            reference(reference.preprocess_image(images)), dim=-1
        ).numpy()
    ours = tiny_clip_encoder.encode(images).geoclip
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_plain_clip_encoder_has_same_retrieval_embedding_and_no_geoclip(
    tiny_clip_encoder: ImageEncoder, tiny_clip_dir: Path
) -> None:
    plain = create_image_encoder(
        EncoderConfig(image_model=str(tiny_clip_dir), image_encoder="clip", device="cpu")
    )
    images = _images(2)
    emb = plain.encode(images)
    assert plain.name == "clip" and emb.geoclip is None
    np.testing.assert_allclose(emb.retrieval, tiny_clip_encoder.encode(images).retrieval, atol=1e-6)
    assert plain.weights_hash == tiny_clip_encoder.weights_hash  # same retrieval embedding space


def test_geoclip_head_refuses_a_clip_that_is_not_768_d(tmp_path: Path) -> None:
    model_dir = build_tiny_clip(tmp_path / "clip64", projection_dim=64)
    with pytest.raises(ConfigError, match="768") as info:
        create_image_encoder(EncoderConfig(image_model=str(model_dir), device="cpu"))
    assert "encoders.image_encoder=clip" in str(info.value)
    plain = create_image_encoder(
        EncoderConfig(image_model=str(model_dir), image_encoder="clip", device="cpu")
    )
    assert plain.encode(_images(1)).retrieval.shape == (1, 64)


def test_weights_hash_is_stable_and_changes_with_the_weights(
    tmp_path: Path, tiny_clip_encoder: ImageEncoder
) -> None:
    same = create_image_encoder(
        EncoderConfig(image_model=str(build_tiny_clip(tmp_path / "same")), image_encoder="clip", device="cpu")
    )
    other = create_image_encoder(
        EncoderConfig(
            image_model=str(build_tiny_clip(tmp_path / "other", seed=1)), image_encoder="clip", device="cpu"
        )
    )
    assert same.weights_hash == tiny_clip_encoder.weights_hash  # another folder, same files
    assert other.weights_hash != tiny_clip_encoder.weights_hash


def test_fingerprint_of_big_files_covers_both_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoders, "_FULL_HASH_LIMIT", 1000)
    monkeypatch.setattr(encoders, "_PARTIAL_HASH_CHUNK", 100)
    path = tmp_path / "w.safetensors"
    data = bytearray(range(256)) * 10
    path.write_bytes(bytes(data))
    original = fingerprint_files([path])
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    tail_changed = fingerprint_files([path])
    data[0] ^= 1
    path.write_bytes(bytes(data))
    assert len({original, tail_changed, fingerprint_files([path])}) == 3


def test_missing_model_says_how_to_pull_it() -> None:
    with pytest.raises(ModelNotAvailableError, match="geosleuth models pull") as info:
        create_image_encoder(EncoderConfig(image_model="no-such-org/no-such-clip", device="cpu"))
    assert "no-such-org/no-such-clip" in str(info.value)


def test_missing_local_model_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "not-here"
    with pytest.raises(ModelNotAvailableError, match="not-here"):
        create_image_encoder(EncoderConfig(image_model=str(missing), device="cpu"))


# --- registry ------------------------------------------------------------------------------------


def test_unknown_encoder_names_list_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as info:
        create_image_encoder(EncoderConfig(image_encoder="siglip-xl"))
    assert "siglip-xl" in str(info.value) and "clip, clip+geoclip" in str(info.value)
    with pytest.raises(ConfigError, match="registered: geoclip"):
        create_location_encoder(EncoderConfig(location_encoder="satclip"))


def test_registered_factory_is_used_and_duplicates_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoders, "_IMAGE_ENCODERS", dict(encoders._IMAGE_ENCODERS))
    seen: list[EncoderConfig] = []

    @register_image_encoder("recording")
    def _factory(config: EncoderConfig) -> ImageEncoder:
        seen.append(config)
        return "an encoder"  # type: ignore[return-value]

    config = EncoderConfig(image_encoder="recording")
    assert create_image_encoder(config) == "an encoder"
    assert seen == [config]
    with pytest.raises(ValueError, match="already registered"):
        register_image_encoder("recording")(lambda config: None)


def test_image_embeddings_checks_shapes() -> None:
    with pytest.raises(ValueError, match="geoclip"):
        ImageEmbeddings(retrieval=np.zeros((2, 8), np.float32), geoclip=np.zeros((3, 512), np.float32))
    emb = ImageEmbeddings(retrieval=np.arange(16, dtype=np.float32).reshape(2, 8))
    assert emb.row(-1).retrieval.tolist() == [list(range(8, 16))]
    with pytest.raises(IndexError):
        emb.row(2)


# --- location encoder ------------------------------------------------------------------------------


def test_geoclip_location_encoder_embeds_offline(geoclip_location_encoder: LocationEncoder) -> None:
    assert isinstance(geoclip_location_encoder, LocationEncoder)
    points = np.array(
        [[48.8566, 2.3522], [48.8049, 2.1204], [-33.8688, 151.2093]]
    )  # Paris, Versailles, Sydney
    emb = geoclip_location_encoder.encode(points)
    assert emb.shape == (3, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]  # nearby places embed closer than antipodes
    np.testing.assert_allclose(geoclip_location_encoder.encode(points[:1]), emb[:1], atol=1e-5)


# Known places, given as (lat, lon). Every longitude here is within ±90 so that (lon, lat) is also a
# valid coordinate: the swapped decoys below are real places, not input errors.
_KNOWN_PLACES = np.array(
    [
        [48.8566, 2.3522],  # Paris
        [-1.2921, 36.8219],  # Nairobi
        [55.7558, 37.6173],  # Moscow
        [-34.6037, -58.3816],  # Buenos Aires
        [64.1466, -21.9426],  # Reykjavik
        [-22.9068, -43.1729],  # Rio de Janeiro
    ]
)


def _geoclip_reference_embeddings(latlon: np.ndarray) -> np.ndarray:
    """GeoCLIP's own LocationEncoder (its shipped weights, its own forward), fed (lat, lon) as GeoCLIP
    documents, L2-normalised as GeoCLIP does before its similarity."""
    import torch
    from geoclip import LocationEncoder as GeoCLIPReference

    reference = GeoCLIPReference().eval()  # from_pretrained=True: the weights inside the package
    with torch.no_grad():
        out = reference(torch.tensor(latlon, dtype=torch.float32))
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_location_embedding_matches_geoclips_own_location_encoder(
    geoclip_location_encoder: LocationEncoder,
) -> None:
    """Same points through geoclip's own code give the same embedding, so our (lat, lon) order is GeoCLIP's."""
    points = np.vstack([_KNOWN_PLACES, [[-33.8688, 151.2093], [21.3069, -157.8583]]])  # + Sydney, Honolulu
    expected = _geoclip_reference_embeddings(points)
    np.testing.assert_allclose(geoclip_location_encoder.encode(points), expected, atol=1e-5)


def test_a_place_ranks_first_against_its_swapped_decoy(geoclip_location_encoder: LocationEncoder) -> None:
    """Verification scores candidates by cosine with the photo's GeoCLIP embedding. With a query that is
    GeoCLIP's own embedding of each place, the place itself must outscore every decoy, in particular the
    same numbers read as (lon, lat): a swap inside our encoder would rank that decoy first."""
    from geosleuth.index.gps_gallery import score_locations

    decoys = _KNOWN_PLACES[:, ::-1]
    candidates = np.vstack([_KNOWN_PLACES, decoys])
    queries = _geoclip_reference_embeddings(_KNOWN_PLACES)
    for i, query in enumerate(queries):
        scores = score_locations(query, candidates, geoclip_location_encoder)
        assert int(np.argmax(scores)) == i, f"place {i} {_KNOWN_PLACES[i].tolist()}: scores {scores.round(3)}"
        assert scores[i] > scores[len(_KNOWN_PLACES) + i] + 0.1  # well clear of its own swapped decoy


def test_geoclip_logit_scale_is_the_shipped_one(geoclip_location_encoder: LocationEncoder) -> None:
    assert geoclip_location_encoder.logit_scale == pytest.approx(math.exp(3.681), rel=1e-3)


def test_location_encoder_rejects_bad_input(geoclip_location_encoder: LocationEncoder) -> None:
    with pytest.raises(InvalidCoordinateError, match="row 1"):
        geoclip_location_encoder.encode(np.array([[10.0, 20.0], [95.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        geoclip_location_encoder.encode(np.zeros((3, 3)))
