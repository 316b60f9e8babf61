"""Real OCR, language identification and gazetteer, loaded once per test session; tool contexts over real
encoders, galleries and geocoder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from PIL import Image, ImageDraw, ImageFont

# matplotlib ships DejaVu fonts, so the rendered signs look the same on every machine.
FONT = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"


@pytest.fixture(scope="session")
def text_tools():
    from geosleuth.agent.tools.text_evidence import TextTools

    return TextTools()


@pytest.fixture(scope="session")
def render_sign() -> Callable[..., Image.Image]:
    """A street-scene-like picture with one or more signs: ``render_sign("Lisboa", "12 km")``."""

    def render(*lines: str, size: tuple[int, int] = (720, 400)) -> Image.Image:
        image = Image.new("RGB", size, (96, 128, 96))
        draw = ImageDraw.Draw(image)
        font = ImageFont.truetype(str(FONT), 44)
        for row, line in enumerate(lines):
            top = 40 + row * 110
            draw.rectangle((40, top, size[0] - 40, top + 90), fill=(20, 60, 160))
            draw.text((70, top + 20), line, font=font, fill="white")
        return image

    return render


@pytest.fixture(scope="session")
def gallery_store(synthetic_store: Path, tiny_image_encoder: Any) -> Iterator[Any]:
    """The synthetic FAISS gallery (5 photos in each of FR, JP, BR, KE, US, AU, IN), opened once."""
    from geosleuth.index.store import GalleryStore

    store = GalleryStore.open(synthetic_store, image_encoder=tiny_image_encoder)
    yield store
    store.close()


@pytest.fixture
def make_context(
    tmp_path: Path, tiny_clip_dir: Path, gps_2k_csv: Path, tiny_image_encoder: Any, location_encoder: Any,
    gps_gallery: Any, geocoder: Any, gallery_store: Any,
) -> Callable[..., Any]:
    """``make_context(image, text_tools=..., store=True, gps=True, constraints=(), **config sections)``: a
    ToolContext over real resources, with the photo encoded and retrieved by the real retrieve stage."""
    from geosleuth.agent.retrieve import retrieve
    from geosleuth.agent.runtime import Resources
    from geosleuth.agent.tools.registry import ToolContext
    from geosleuth.config import Config

    def make(image: Image.Image, *, text_tools: Any = None, store: bool = True, gps: bool = True,
             constraints: tuple = (), **sections: dict) -> ToolContext:
        tree: dict[str, dict] = {
            "encoders": {"image_model": str(tiny_clip_dir), "device": "cpu", "dtype": "float32"},
            "index": {"gps_gallery": str(gps_2k_csv), "cache_dir": str(tmp_path / "cache")},
            "retrieval": {"k_neighbors": 5, "k_dissimilar": 0, "k_gps": 10},
            "vlm": {"backend": "none", "max_image_pixels": 128 * 128},
        }
        for name, values in sections.items():
            tree.setdefault(name, {}).update(values)
        config = Config.model_validate(tree)
        resources = Resources(
            config=config, image_encoder=tiny_image_encoder, geocoder=geocoder, location_encoder=location_encoder,
            gps_gallery=gps_gallery if gps else None, store=gallery_store if store else None, text_tools=text_tools,
        )
        embeddings = tiny_image_encoder.encode([image])
        retrieval = retrieve(embeddings, resources.store, resources.gps_gallery, config, geocoder,
                             constraints=constraints)
        return ToolContext(image=image, embeddings=embeddings, retrieval=retrieval, resources=resources,
                           constraints=tuple(constraints))

    return make
