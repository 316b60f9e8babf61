"""Test doubles for the batch runner: a scripted async locate function and a folder of photos,
some of them broken. They live only here: product code never fakes a prediction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from geosleuth.agent.batch import BatchItem
from geosleuth.types import Candidate, CandidateSource, Clue, ImageRef, LevelConfidence, Place, Prediction

# Lisbon: latitude and longitude differ in sign and size, so a swapped order shows.
LISBON = (38.7223, -9.1393)


def fake_prediction(path: str, lat: float | None = LISBON[0], lon: float | None = LISBON[1]) -> Prediction:
    """A plausible prediction; lat=None gives a failed one (with its reason)."""
    if lat is None:
        return Prediction(image=ImageRef(path=path), failure_reason="no usable candidate (test double)")
    place = Place(continent="Europe", country_code="PT", country="Portugal", admin1="Lisbon", city="Lisbon")
    return Prediction(
        image=ImageRef(path=path),
        lat=lat,
        lon=lon,
        place=place,
        confidence=0.42,
        levels=LevelConfidence(country=0.9, region=0.7, city=0.5, within_25km=0.42, within_200km=0.6,
                               calibration="test@000000000000"),
        alternatives=[
            Candidate(lat=lat, lon=lon, source=CandidateSource.VLM, score=0.8, confidence=0.42, place=place),
            Candidate(lat=41.15, lon=-8.61, source=CandidateSource.RETRIEVAL, score=0.5, confidence=0.2),
        ],
        clues=[Clue(observation="azulejo tiles <b>on</b> walls", implication="Portugal")],
        sources_used=["vlm", "gps-gallery"],
        trace_id="t-" + Path(path).stem,
    )


class ScriptedLocator:
    """An async locate function: loads the image for real (broken files raise ImageLoadError),
    waits ``delay`` seconds, and returns :func:`fake_prediction`; counts calls in flight."""

    def __init__(self, delay: float = 0.0, no_coordinate: set[str] | None = None) -> None:
        self.delay = delay
        self.no_coordinate = no_coordinate or set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[str] = []

    async def __call__(self, item: BatchItem) -> Prediction:
        from geosleuth.imageio import load_image

        self.calls.append(item.id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            load_image(item.path)
            if item.id in self.no_coordinate:
                return fake_prediction(item.path, None, None)
            return fake_prediction(item.path)
        finally:
            self.in_flight -= 1


@pytest.fixture
def make_locator() -> Callable[..., ScriptedLocator]:
    return ScriptedLocator


@pytest.fixture
def make_prediction() -> Callable[..., Prediction]:
    return fake_prediction


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """6 good photos (two in a sub-folder), 3 broken ones, one non-image file and a hidden file."""
    from geosleuth.testing import photos

    root = tmp_path / "photos"
    for name in ("a.jpg", "b.png", "c.jpeg", "sub/d.jpg", "sub/e.JPG", "z.webp"):
        photos.write_photo(root / name)
    photos.write_text_file(root / "broken_text.jpg")
    photos.write_empty_file(root / "broken_empty.png")
    photos.write_truncated_jpeg(root / "sub/broken_truncated.jpg", keep=0.3)
    (root / "notes.txt").write_text("not an image")
    photos.write_photo(root / ".hidden.jpg")
    return root

