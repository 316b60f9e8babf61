"""Fixtures and test doubles for the agent tests.

Real pieces wherever they are cheap: GeoCLIP's shipped location encoder, a tiny random CLIP with
GeoCLIP's real image head, a small GPS gallery (every 50th point of GeoCLIP's 100K, 2,000 points),
offline reverse geocoding. The doubles (a scripted VLM, a fixed gallery store) live only here.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geosleuth.config import Config
from geosleuth.geo import ReverseGeocoder
from geosleuth.types import GalleryNeighbor
from geosleuth.vlm.backends import VLMRequest, VLMUnavailableError

PARIS = (48.8566, 2.3522)
LISBON = (38.7223, -9.1393)
TOKYO = (35.6762, 139.6503)
SYDNEY = (-33.8688, 151.2093)
LIMA = (-12.0464, -77.0428)
NAIROBI = (-1.2921, 36.8219)


def answer(lat: float, lon: float, *, country: str, continent: str, region: str | None = None,
           clue: str = "a clue", confidence: float = 0.6) -> dict[str, Any]:
    """A valid GeoAnswer reply as a dict."""
    return {
        "clues": [{"observation": clue, "implication": f"points to {country}"}],
        "continent": continent,
        "country": country,
        "region": region,
        "city": None,
        "latitude": lat,
        "longitude": lon,
        "confidence": confidence,
    }


class ScriptedVLM:
    """A VLM double: reasoning requests (with a JSON schema) get the scripted answers in turn;
    follow-up questions (no schema) get ``"reply <n>: <last user text>"``. ``fail`` makes every
    request raise it instead."""

    def __init__(self, answers: Sequence[dict[str, Any]] = (), *, fail: Exception | None = None,
                 model_id: str = "scripted-vlm") -> None:
        self.answers = list(answers)
        self.fail = fail
        self.model_id = model_id
        self.requests: list[VLMRequest] = []
        self.closed = False
        self._next = 0

    async def generate(self, request: VLMRequest) -> list[str]:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        if request.json_schema is None:
            return [f"reply {len(self.requests)}: {request.messages[-1].text[-60:]}"]
        out = []
        for _ in range(request.n):
            out.append(json.dumps(self.answers[self._next % len(self.answers)]))
            self._next += 1
        return out

    async def aclose(self) -> None:
        self.closed = True

    def followups(self) -> list[VLMRequest]:
        return [r for r in self.requests if r.json_schema is None]


def unreachable_vlm() -> ScriptedVLM:
    return ScriptedVLM(fail=VLMUnavailableError("connection refused by 127.0.0.1:9 after 3 attempts", attempts=3))


class FixedStore:
    """A gallery-store double: ``search`` returns the given neighbours (minus excluded ids/authors)."""

    def __init__(self, neighbors: Sequence[GalleryNeighbor], dissimilar: Sequence[GalleryNeighbor] = ()) -> None:
        self.neighbors = list(neighbors)
        self.far = list(dissimilar)
        self.path = "fixed-store"
        self.calls: list[dict[str, Any]] = []

    def _pick(self, items: list[GalleryNeighbor], k: int, exclude_ids: Sequence[str],
              exclude_authors: Sequence[str]) -> list[GalleryNeighbor]:
        kept = [n for n in items if n.id not in exclude_ids and n.metadata.get("author") not in exclude_authors]
        return [n.model_copy(deep=True) for n in kept[:k]]

    def search(self, embedding: np.ndarray, k: int, *, exclude_ids: Sequence[str] = (),
               exclude_authors: Sequence[str] = ()) -> list[GalleryNeighbor]:
        self.calls.append({"k": k, "exclude_ids": tuple(exclude_ids), "exclude_authors": tuple(exclude_authors)})
        return self._pick(self.neighbors, k, exclude_ids, exclude_authors)

    def dissimilar(self, embedding: np.ndarray, k: int, *, exclude_ids: Sequence[str] = (),
                   exclude_authors: Sequence[str] = ()) -> list[GalleryNeighbor]:
        return self._pick(self.far, k, exclude_ids, exclude_authors)

    def describe(self) -> str:
        return f"{self.path} ({len(self.neighbors)} neighbours)"

    def close(self) -> None:
        pass


def neighbors_around(center: tuple[float, float], count: int, *, prefix: str, similarity: float = 0.9,
                     spread_deg: float = 0.05, author: str = "someone") -> list[GalleryNeighbor]:
    rng = np.random.default_rng(zlib.crc32(prefix.encode()))
    return [
        GalleryNeighbor(
            id=f"{prefix}-{i}",
            lat=center[0] + float(rng.uniform(-spread_deg, spread_deg)),
            lon=center[1] + float(rng.uniform(-spread_deg, spread_deg)),
            similarity=similarity,
            metadata={"author": author},
        )
        for i in range(count)
    ]


@pytest.fixture
def base_config(tmp_path: Path, gps_2k_csv: Path, tiny_clip_dir: Path) -> Config:
    """Small and fast: 2K GPS gallery, few samples, short generations, sessions under tmp_path."""
    return Config.model_validate(
        {
            "encoders": {"image_model": str(tiny_clip_dir), "device": "cpu", "dtype": "float32"},
            "index": {"gps_gallery": str(gps_2k_csv), "cache_dir": str(tmp_path / "cache")},
            "retrieval": {"k_neighbors": 5, "k_dissimilar": 2, "k_gps": 10},
            "vlm": {"backend": "none", "samples_per_variant": 2, "max_new_tokens": 24, "device": "cpu"},
            "prompts": {"neighbor_counts": [0, 5]},
        }
    )


@pytest.fixture
def make_resources(
    base_config: Config, tiny_image_encoder: Any, location_encoder: Any, gps_gallery: Any, geocoder: ReverseGeocoder
) -> Callable[..., Any]:
    """Resources from the session's real models plus the given store / backend / config changes."""
    from geosleuth.agent.runtime import Resources

    def make(*, store: Any = None, backend: Any = None, config: Config | None = None, gps: bool = True) -> Resources:
        return Resources(
            config=config or base_config,
            image_encoder=tiny_image_encoder,
            geocoder=geocoder,
            location_encoder=location_encoder,
            gps_gallery=gps_gallery if gps else None,
            store=store,
            backend=backend,
        )

    return make


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    from geosleuth.testing.photos import write_photo

    image = Image.new("RGB", (64, 48), (70, 120, 200))
    image.paste((200, 180, 90), (0, 30, 64, 48))
    return write_photo(tmp_path / "photo.jpg", image=image)


@pytest.fixture(scope="session")
def doubles() -> Any:
    """The helpers above, for test modules (pytest's importlib mode cannot import conftest)."""
    import types

    return types.SimpleNamespace(
        ScriptedVLM=ScriptedVLM,
        FixedStore=FixedStore,
        neighbors_around=neighbors_around,
        answer=answer,
        unreachable_vlm=unreachable_vlm,
        PARIS=PARIS, LISBON=LISBON, TOKYO=TOKYO, SYDNEY=SYDNEY, LIMA=LIMA, NAIROBI=NAIROBI,
    )
