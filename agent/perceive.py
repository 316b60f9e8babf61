"""The perceive stage: load the image safely, read its EXIF, embed it once.

One encoder pass gives both embeddings the later stages use (retrieval + GeoCLIP).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from geosleuth.imageio import LoadedImage, load_image
from geosleuth.index.encoders import ImageEmbeddings, ImageEncoder
from geosleuth.types import ImageRef


@dataclass(frozen=True)
class Perception:
    image: LoadedImage
    embeddings: ImageEmbeddings  # one row: retrieval (1, D), geoclip (1, 512) or None

    @property
    def ref(self) -> ImageRef:
        return self.image.ref


def perceive(path: str | os.PathLike[str], image_encoder: ImageEncoder, *, max_pixels: int | None) -> Perception:
    """The upright RGB image (at most ``max_pixels``), its reference (hash, size, EXIF) and embeddings.

    Raises ImageLoadError naming the file when it is not a readable picture.
    """
    loaded = load_image(path, max_pixels=max_pixels)
    embeddings = image_encoder.encode([loaded.image])
    if len(embeddings) != 1:
        raise ValueError(f"image encoder {image_encoder.name!r} returned {len(embeddings)} rows for one image")
    return Perception(image=loaded, embeddings=embeddings)
