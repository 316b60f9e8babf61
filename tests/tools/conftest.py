"""Real OCR, language identification and gazetteer, loaded once per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
