"""What a gallery store is: its files, its manifest and the encoder whose embeddings it holds.

``manifest.json`` records the encoder id + weights hash, dim, metric, index type and parameters,
count, source, build parameters and creation time. It is written last: a folder without it is an
unfinished build. :func:`read_manifest` reads it and says what is wrong; :func:`check_encoder` refuses
a query encoder whose embeddings are not comparable with the store's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geosleuth.errors import GalleryIndexError
from geosleuth.index.faiss_index import METRIC, IndexType

if TYPE_CHECKING:
    from geosleuth.index.encoders import ImageEncoder

STORE_FORMAT = 1
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
METADATA_FILE = "metadata.sqlite"
BUILD_DIR = "build"


@dataclass(frozen=True)
class EncoderIdentity:
    """Which embedding space a store lives in. Two encoders match when name, weights hash and
    dimension all agree (``model_id`` is informative: the same weights may live in another folder)."""

    name: str
    model_id: str
    weights_hash: str
    dim: int

    @classmethod
    def of(cls, encoder: ImageEncoder) -> EncoderIdentity:
        return cls(name=encoder.name, model_id=encoder.model_id, weights_hash=encoder.weights_hash, dim=encoder.dim)

    def matches(self, other: EncoderIdentity) -> bool:
        return (self.name, self.weights_hash, self.dim) == (other.name, other.weights_hash, other.dim)

    def describe(self) -> str:
        return f"{self.name!r} ({self.model_id}, weights {self.weights_hash[:12]}, {self.dim}-d)"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderRecord(_Model):
    name: str
    model_id: str
    weights_hash: str


class StoreManifest(_Model):
    """Contents of ``manifest.json``."""

    format_version: int = STORE_FORMAT
    encoder: EncoderRecord
    dim: int = Field(gt=0)
    metric: Literal["inner_product"] = METRIC
    normalized: bool = True
    index_type: IndexType
    index_params: dict[str, Any] = Field(default_factory=dict)
    count: int = Field(ge=0)
    failures: int = Field(0, ge=0)
    source: dict[str, Any] = Field(default_factory=dict)
    build: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def encoder_identity(self) -> EncoderIdentity:
        return EncoderIdentity(self.encoder.name, self.encoder.model_id, self.encoder.weights_hash, self.dim)


@dataclass(frozen=True)
class BuildFailure:
    """An input that could not be added to the gallery."""

    source: str  # image path (or table row / embedding row)
    reason: str



def read_manifest(path: Path) -> StoreManifest:
    """The manifest of the store at ``path``; GalleryIndexError says what is wrong and what to do."""
    file = path / MANIFEST_FILE
    if not path.exists():
        raise GalleryIndexError(f"gallery store {str(path)!r} does not exist; build one with `geosleuth index build`")
    if not path.is_dir():
        raise GalleryIndexError(f"gallery store {str(path)!r} is a file, not a store folder")
    if not file.is_file():
        if (path / BUILD_DIR).is_dir():
            raise GalleryIndexError(
                f"gallery store {str(path)!r} is an unfinished build; "
                "re-run the same `geosleuth index build ... --resume` to finish it"
            )
        raise GalleryIndexError(
            f"{str(path)!r} is not a gallery store (no {MANIFEST_FILE}); build one with `geosleuth index build`"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryIndexError(
            f"gallery store manifest {str(file)!r} is unreadable ({exc}); rebuild the store"
        ) from None
    if isinstance(data, dict) and data.get("format_version") != STORE_FORMAT:
        raise GalleryIndexError(
            f"gallery store {str(path)!r} has format version {data.get('format_version')!r}, this geosleuth "
            f"reads version {STORE_FORMAT}; rebuild it with `geosleuth index build`"
        )
    try:
        return StoreManifest.model_validate(data)
    except ValidationError as exc:
        raise GalleryIndexError(f"gallery store manifest {str(file)!r} is invalid ({exc.error_count()} errors: "
                                f"{exc.errors()[0]['msg']}); rebuild the store") from None


def check_encoder(manifest: StoreManifest, encoder: EncoderIdentity, path: Path) -> None:
    """Raise GalleryIndexError unless ``encoder`` produces the embeddings the store was built from."""
    built = manifest.encoder_identity
    if built.matches(encoder):
        return
    raise GalleryIndexError(
        f"gallery store {str(path)!r} was built with image encoder {built.describe()}, but the configured "
        f"encoder is {encoder.describe()}: their embeddings are not comparable. Rebuild the store with "
        f"`geosleuth index build` using this encoder, or set encoders.image_encoder / encoders.image_model "
        f"to the ones the store was built with."
    )

