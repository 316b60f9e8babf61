"""Evaluation presets: each is valid `--set` input, and each ranks candidates the way its name says.

The ranking checks run the real verify and decide stages on constructed retrieval results and VLM
answers, where the presets must disagree (an isolated best neighbour against a cluster of weaker ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from geosleuth.agent.decide import decide
from geosleuth.agent.verify import verify
from geosleuth.config import Config, load_config
from geosleuth.errors import ConfigError
from geosleuth.eval.presets import PRESETS, describe_presets, preset_config
from geosleuth.geo import ReverseGeocoder, haversine_km
from geosleuth.types import GalleryNeighbor, GPSCandidate, Hypothesis, ImageRef, Prediction, RetrievalResult

TOKYO = (35.6762, 139.6503)
PARIS = (48.8566, 2.3522)
LISBON = (38.7223, -9.1393)


@pytest.fixture(scope="module")
def geocoder() -> ReverseGeocoder:
    return ReverseGeocoder()


def _neighbor(i: int, lat: float, lon: float, similarity: float) -> GalleryNeighbor:
    return GalleryNeighbor(id=f"g{i}", lat=lat, lon=lon, similarity=similarity, metadata={"author": f"a{i}"})


def _answer(i: int, lat: float, lon: float, country: str) -> Hypothesis:
    return Hypothesis(
        country=country, lat=lat, lon=lon, confidence=0.5, raw_text="{}", template_id="geo_reasoning",
        template_hash="h", model="m", variant="neighbors-0", sample_index=i,
    )


def _locate(config: Config, retrieval: RetrievalResult, geocoder: ReverseGeocoder, *,
            hypotheses: tuple[Hypothesis, ...] = (), geoclip: np.ndarray | None = None,
            location_encoder: Any = None) -> Prediction:
    checked = verify(retrieval, hypotheses, geoclip_embedding=geoclip, location_encoder=location_encoder,
                     geocoder=geocoder, config=config.verify)
    return decide(checked, image=ImageRef(path="q.jpg"), hypotheses=hypotheses, geocoder=geocoder,
                  config=config.verify, top_k=3, sources_used=[])


@pytest.fixture(scope="module")
def isolated_best_neighbor() -> RetrievalResult:
    """The most similar gallery image is in Tokyo, alone; four slightly less similar ones are in Paris."""
    paris = [_neighbor(i, PARIS[0] + 0.01 * i, PARIS[1] - 0.01 * i, 0.80 - 0.01 * i) for i in range(1, 5)]
    return RetrievalResult(neighbors=[_neighbor(0, *TOKYO, 0.81), *paris],
                           gps_candidates=[GPSCandidate(lat=PARIS[0], lon=PARIS[1], similarity=0.9)],
                           sources=["gallery", "gps-gallery"])


def test_every_preset_is_valid_set_input() -> None:
    base = load_config(environ={})  # with this machine's device recipe, as `--set` would build it
    for name in PRESETS:
        config, resolved = preset_config(name, base)
        assert all("{" not in item for item in resolved), name
        # exactly what `geosleuth --set ...` would build from the same strings
        assert config == load_config(overrides=resolved, environ={}), name
    assert preset_config("full", base)[0] == base


def test_the_users_own_settings_win_over_the_preset() -> None:
    config, resolved = preset_config("geoclip-top1", Config(), extra_overrides=["vlm.backend=openai"])
    assert "vlm.backend=none" in resolved and config.vlm.backend == "openai"
    assert config.verify.w_neighbor_support == 0, "the rest of the preset still applies"
    with pytest.raises(ConfigError, match="unknown evaluation preset 'geoclip'.*geoclip-top1"):
        preset_config("geoclip", Config())


def test_relative_values_follow_the_base_configuration() -> None:
    base = Config.model_validate({"prompts": {"neighbor_counts": [0, 3, 7]}, "vlm": {"samples_per_variant": 3}})
    rows = {row["name"]: row for row in describe_presets(base)}
    assert "prompts.neighbor_counts=[{largest_neighbor_count}]" in rows["no-diversification"]["overrides"]
    assert "prompts.neighbor_counts=[7]" in rows["no-diversification"]["resolved"]
    for name in ("no-diversification", "no-retrieval", "vlm-zero-shot"):  # same VLM sample budget as full: 3 x 3
        assert preset_config(name, base)[0].vlm.samples_per_variant == 9, name


def test_nearest_neighbor_answers_the_most_similar_neighbours_exact_coordinate(
    isolated_best_neighbor: RetrievalResult, geocoder: ReverseGeocoder
) -> None:
    config, _ = preset_config("nearest-neighbor", Config())
    prediction = _locate(config, isolated_best_neighbor, geocoder)
    assert (prediction.lat, prediction.lon) == TOKYO
    assert [c.source_ref for c in prediction.alternatives][:2] == ["g0", "g1"], "then by similarity"


def test_neighbor_vote_answers_where_most_neighbours_are(
    isolated_best_neighbor: RetrievalResult, geocoder: ReverseGeocoder
) -> None:
    config, _ = preset_config("neighbor-vote", Config())
    prediction = _locate(config, isolated_best_neighbor, geocoder)
    assert prediction.ok and float(haversine_km(prediction.lat, prediction.lon, *PARIS)) < 5
    assert all(c.source.value == "retrieval" for c in prediction.alternatives), "GPS candidates are not answers"


def test_geoclip_top1_answers_the_gps_candidate_geoclip_ranks_first(geocoder: ReverseGeocoder) -> None:
    from geosleuth.config import EncoderConfig
    from geosleuth.index.encoders import create_location_encoder

    location_encoder = create_location_encoder(EncoderConfig(device="cpu"))
    # An image embedding that is exactly Lisbon's location embedding: GeoCLIP's best candidate is Lisbon,
    # although the GPS list and an (ignored) gallery neighbour say otherwise.
    image = location_encoder.encode(np.array([LISBON]))[0]
    retrieval = RetrievalResult(
        neighbors=[_neighbor(0, *PARIS, 0.99)],
        gps_candidates=[GPSCandidate(lat=TOKYO[0], lon=TOKYO[1], similarity=0.9),
                        GPSCandidate(lat=LISBON[0], lon=LISBON[1], similarity=0.2)],
    )
    config, _ = preset_config("geoclip-top1", Config())
    prediction = _locate(config, retrieval, geocoder, geoclip=image, location_encoder=location_encoder)
    assert (prediction.lat, prediction.lon) == LISBON
    assert {c.source.value for c in prediction.alternatives} == {"gps-gallery"}


@pytest.mark.parametrize("name", ["no-verification", "vlm-zero-shot"])
def test_vlm_presets_answer_the_answer_most_samples_agree_with(name: str, geocoder: ReverseGeocoder) -> None:
    # Two samples say Lisbon, one Tokyo; a gallery neighbour 1 km from Lisbon agrees with the Lisbon
    # samples just as much, but it is retrieval, not a VLM answer, so it must not lead the answer.
    hypotheses = (_answer(0, *LISBON, "Portugal"), _answer(1, *LISBON, "Portugal"), _answer(2, *TOKYO, "Japan"))
    retrieval = RetrievalResult(neighbors=[_neighbor(0, LISBON[0] + 0.009, LISBON[1], 0.9)])
    config, _ = preset_config(name, Config())
    prediction = _locate(config, retrieval, geocoder, hypotheses=hypotheses)
    # (the two Lisbon answers are averaged on the sphere: equal up to float rounding)
    assert (prediction.lat, prediction.lon) == pytest.approx(LISBON, abs=1e-9)
    assert {c.source.value for c in prediction.alternatives} == {"vlm"}
    assert set(prediction.alternatives[0].scores) == {"vlm-zero-shot"}, "only the VLM's evidence is on"
