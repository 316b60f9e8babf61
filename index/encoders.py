"""Image and location encoders behind small protocols, created by name from the configuration.

Built-in encoders:

- image ``"clip+geoclip"``: a CLIP vision tower (``encoders.image_model``, default ViT-L/14). One
  forward pass gives both the retrieval embedding (L2-normalised projected CLIP features) and the
  GeoCLIP embedding (GeoCLIP's shipped image MLP head applied to the same 768-d projected features,
  L2-normalised), comparable with GeoCLIP location embeddings.
- image ``"clip"``: the retrieval embedding only (``geoclip`` is None); works with any CLIP size.
- location ``"geoclip"``: GeoCLIP's pretrained location encoder (weights ship in the ``geoclip``
  package, so it always loads offline).

Weights are resolved with :func:`geosleuth.models.resolve_model`: nothing downloads implicitly.
torch/transformers/geoclip are imported when an encoder is created, not when this module is.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from geosleuth.config import EncoderConfig
from geosleuth.devices import resolve_device, resolve_dtype
from geosleuth.errors import ConfigError, ModelNotAvailableError
from geosleuth.geo import validate_coordinates
from geosleuth.models import resolve_model

if TYPE_CHECKING:
    import torch
    from PIL import Image

GEOCLIP_FEATURE_DIM = 768  # CLIP ViT-L/14 projected features, the input of GeoCLIP's image head
GEOCLIP_EMBEDDING_DIM = 512
# Files larger than this are fingerprinted by name, size and their first and last MiB.
_FULL_HASH_LIMIT = 64 * 2**20
_PARTIAL_HASH_CHUNK = 2**20


@dataclass(frozen=True)
class ImageEmbeddings:
    """Embeddings of N images; row i of each array belongs to image i.

    ``retrieval``: (N, D) float32, L2-normalised (gallery search). ``geoclip``: (N, 512) float32,
    L2-normalised, comparable with GeoCLIP location embeddings; None when the encoder has no
    GeoCLIP head.
    """

    retrieval: np.ndarray
    geoclip: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.retrieval.ndim != 2 or self.retrieval.dtype != np.float32:
            raise ValueError(
                f"retrieval embeddings must be 2-D float32, got {self.retrieval.shape} {self.retrieval.dtype}"
            )
        if self.geoclip is not None and (
            self.geoclip.shape != (len(self.retrieval), GEOCLIP_EMBEDDING_DIM)
            or self.geoclip.dtype != np.float32
        ):
            raise ValueError(
                "geoclip embeddings must be float32 of shape "
                f"({len(self.retrieval)}, {GEOCLIP_EMBEDDING_DIM}), "
                f"got {self.geoclip.shape} {self.geoclip.dtype}"
            )

    def __len__(self) -> int:
        return len(self.retrieval)

    def row(self, index: int) -> ImageEmbeddings:
        """The embeddings of one image, still 2-D (shape (1, D)); use ``.retrieval[0]`` for a vector."""
        i = range(len(self))[index]  # IndexError when out of range; negative indices count from the end
        return ImageEmbeddings(
            retrieval=self.retrieval[i : i + 1],
            geoclip=None if self.geoclip is None else self.geoclip[i : i + 1],
        )


@runtime_checkable
class ImageEncoder(Protocol):
    name: str  # registered encoder name, e.g. "clip+geoclip"
    model_id: str  # as configured (hub id or local directory)
    weights_hash: str  # identifies the retrieval embedding space: changes when weights/preprocessing change
    dim: int  # width of the retrieval embedding

    def encode(self, images: Sequence[Image.Image]) -> ImageEmbeddings: ...


@runtime_checkable
class LocationEncoder(Protocol):
    name: str
    weights_hash: str
    dim: int
    # Factor applied to cosine similarities before a softmax (GeoCLIP: exp(3.681) = 39.69).
    logit_scale: float

    def encode(self, latlon: np.ndarray) -> np.ndarray: ...


ImageEncoderFactory = Callable[[EncoderConfig], ImageEncoder]
LocationEncoderFactory = Callable[[EncoderConfig], LocationEncoder]
_F = TypeVar("_F", bound=Callable[..., Any])

# Name -> factory. Filled by the decorators below (the built-ins at the end of this module, plug-ins
# when their module is imported); read by create_*_encoder.
_IMAGE_ENCODERS: dict[str, ImageEncoderFactory] = {}
_LOCATION_ENCODERS: dict[str, LocationEncoderFactory] = {}


def _register(registry: dict[str, Any], kind: str, name: str) -> Callable[[_F], _F]:
    def decorator(factory: _F) -> _F:
        if name in registry and registry[name] is not factory:
            raise ValueError(f"a {kind} encoder named {name!r} is already registered ({registry[name]!r})")
        registry[name] = factory
        return factory

    return decorator


def register_image_encoder(name: str) -> Callable[[_F], _F]:
    """Decorator: make ``factory(config: EncoderConfig) -> ImageEncoder`` available as ``name``."""
    return _register(_IMAGE_ENCODERS, "image", name)


def register_location_encoder(name: str) -> Callable[[_F], _F]:
    """Decorator: make ``factory(config: EncoderConfig) -> LocationEncoder`` available as ``name``."""
    return _register(_LOCATION_ENCODERS, "location", name)


def image_encoder_names() -> list[str]:
    return sorted(_IMAGE_ENCODERS)


def location_encoder_names() -> list[str]:
    return sorted(_LOCATION_ENCODERS)


def create_image_encoder(config: EncoderConfig) -> ImageEncoder:
    """The image encoder named by ``config.image_encoder``, loaded and ready."""
    factory = _IMAGE_ENCODERS.get(config.image_encoder)
    if factory is None:
        raise ConfigError(
            f"unknown image encoder {config.image_encoder!r} (setting encoders.image_encoder); "
            f"registered: {', '.join(image_encoder_names()) or 'none'}"
        )
    return factory(config)


def create_location_encoder(config: EncoderConfig) -> LocationEncoder:
    """The location encoder named by ``config.location_encoder``, loaded and ready."""
    factory = _LOCATION_ENCODERS.get(config.location_encoder)
    if factory is None:
        raise ConfigError(
            f"unknown location encoder {config.location_encoder!r} (setting encoders.location_encoder); "
            f"registered: {', '.join(location_encoder_names()) or 'none'}"
        )
    return factory(config)


# ---------------------------------------------------------------------------------------------
# Helpers


def fingerprint_files(files: Iterable[Path]) -> str:
    """A stable sha256 over files' names, sizes and contents (big files: first and last MiB).

    Any change of weights or configuration files changes it; the directory they live in does not.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as fh:
            if size <= _FULL_HASH_LIMIT:
                for block in iter(lambda fh=fh: fh.read(2**20), b""):
                    digest.update(block)
            else:
                digest.update(fh.read(_PARTIAL_HASH_CHUNK))
                fh.seek(size - _PARTIAL_HASH_CHUNK)
                digest.update(fh.read(_PARTIAL_HASH_CHUNK))
    return digest.hexdigest()


def geoclip_package_dir() -> Path:
    """Folder of the installed ``geoclip`` package (found without importing it)."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "the geoclip package (GeoCLIP's shipped weights and GPS gallery) is not installed: "
            "run `pip install --no-deps geoclip` (see the README for why --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def geoclip_weights_file(name: str) -> Path:
    path = geoclip_package_dir() / "model" / "weights" / name
    if not path.is_file():
        raise ModelNotAvailableError(
            f"GeoCLIP weights file {str(path)!r} is missing: "
            "reinstall with `pip install --no-deps --force-reinstall geoclip`"
        )
    return path


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise ModelNotAvailableError(
            f"cannot read weights file {str(path)!r} ({type(exc).__name__}: {exc}); "
            "reinstall the package that ships it"
        ) from None


# ---------------------------------------------------------------------------------------------
# CLIP image encoder (+ GeoCLIP image head)

# CLIP checkpoints on the hub are full CLIPModels; the text tower's weights are expected extras.
_CLIP_TEXT_KEYS = (r"^text_model\.", r"^text_projection\.", r"^logit_scale$")
_PREPROCESSING_FILES = ("config.json", "preprocessor_config.json", "processor_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


class CLIPImageEncoder:
    """A CLIP vision tower (+ optionally GeoCLIP's image head), loaded once, used for many batches.

    Preprocessing always uses transformers' PIL backend, so embeddings do not depend on whether
    torchvision happens to be installed (a gallery built on one machine matches queries on another).
    """

    def __init__(
        self,
        model_id: str,
        *,
        with_geoclip_head: bool,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        if batch_size < 1:
            raise ConfigError(f"encoders.batch_size must be >= 1, got {batch_size}")
        self.name = name or ("clip+geoclip" if with_geoclip_head else "clip")
        self.model_id = model_id
        self.batch_size = batch_size
        model_dir = resolve_model(model_id)
        self.device = resolve_device(device, setting="encoders.device")
        self.dtype = resolve_dtype(dtype, self.device)

        class _VisionTower(CLIPVisionModelWithProjection):
            _keys_to_ignore_on_load_unexpected = list(_CLIP_TEXT_KEYS)

        try:
            model = _VisionTower.from_pretrained(model_dir, dtype=self.dtype, local_files_only=True)
            self.processor = AutoImageProcessor.from_pretrained(
                model_dir, backend="pil", local_files_only=True
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelNotAvailableError(
                f"cannot load a CLIP vision model from {str(model_dir)!r} "
                f"(encoders.image_model={model_id!r}): "
                f"{type(exc).__name__}: {exc}"
            ) from None
        self.model = model.to(self.device).eval()
        self.dim = int(self.model.config.projection_dim)
        weight_files = [p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)]
        config_files = [model_dir / n for n in _PREPROCESSING_FILES if (model_dir / n).is_file()]
        self.weights_hash = fingerprint_files(weight_files + config_files)

        self.geoclip_head: torch.nn.Module | None = None
        self.geoclip_head_hash: str | None = None
        if with_geoclip_head:
            if self.dim != GEOCLIP_FEATURE_DIM:
                raise ConfigError(
                    f"image model {model_id!r} projects to {self.dim}-d features, but GeoCLIP's image "
                    f"head takes {GEOCLIP_FEATURE_DIM}-d CLIP ViT-L/14 features: use a ViT-L/14 CLIP "
                    "(openai/clip-vit-large-patch14) or set encoders.image_encoder=clip "
                    "(no GPS-gallery scores)"
                )
            head_file = geoclip_weights_file("image_encoder_mlp_weights.pth")
            head = torch.nn.Sequential(
                torch.nn.Linear(GEOCLIP_FEATURE_DIM, GEOCLIP_FEATURE_DIM),
                torch.nn.ReLU(),
                torch.nn.Linear(GEOCLIP_FEATURE_DIM, GEOCLIP_EMBEDDING_DIM),
            )
            head.load_state_dict(_torch_load(head_file))
            # The head stays float32: it is tiny, and fp16 would only add rounding.
            self.geoclip_head = head.to(self.device).eval()
            self.geoclip_head_hash = fingerprint_files([head_file])

    def __repr__(self) -> str:
        return (
            f"CLIPImageEncoder(name={self.name!r}, model_id={self.model_id!r}, dim={self.dim}, "
            f"device={self.device})"
        )

    def encode(self, images: Sequence[Image.Image]) -> ImageEmbeddings:
        """Embed images (any PIL mode; converted to RGB) in batches of ``batch_size``."""
        import torch

        images = list(images)
        retrieval = np.empty((len(images), self.dim), dtype=np.float32)
        geoclip = (
            np.empty((len(images), GEOCLIP_EMBEDDING_DIM), dtype=np.float32) if self.geoclip_head else None
        )
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [
                    im if im.mode == "RGB" else im.convert("RGB")
                    for im in images[start : start + self.batch_size]
                ]
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                features = self.model(pixel_values=pixels.to(self.device, self.dtype)).image_embeds.float()
                stop = start + len(batch)
                retrieval[start:stop] = _l2_normalise(features).cpu().numpy()
                if self.geoclip_head is not None and geoclip is not None:
                    # GeoCLIP applies its head to the raw (unnormalised) projected features.
                    geoclip[start:stop] = _l2_normalise(self.geoclip_head(features)).cpu().numpy()
        return ImageEmbeddings(retrieval=retrieval, geoclip=geoclip)


def _l2_normalise(x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.normalize(x, dim=-1)


@register_image_encoder("clip+geoclip")
def _clip_geoclip_factory(config: EncoderConfig) -> ImageEncoder:
    return CLIPImageEncoder(
        config.image_model,
        with_geoclip_head=True,
        device=config.device,
        dtype=config.dtype,
        batch_size=config.batch_size,
    )


@register_image_encoder("clip")
def _clip_factory(config: EncoderConfig) -> ImageEncoder:
    return CLIPImageEncoder(
        config.image_model,
        with_geoclip_head=False,
        device=config.device,
        dtype=config.dtype,
        batch_size=config.batch_size,
    )


# ---------------------------------------------------------------------------------------------
# GeoCLIP location encoder


class GeoCLIPLocationEncoder:
    """GeoCLIP's pretrained location encoder: (lat, lon) degrees -> 512-d L2-normalised embeddings."""

    name = "geoclip"
    dim = GEOCLIP_EMBEDDING_DIM

    def __init__(self, *, device: str = "auto", batch_size: int = 8192) -> None:
        import torch

        weights_file = geoclip_weights_file("location_encoder_weights.pth")
        scale_file = geoclip_weights_file("logit_scale_weights.pth")
        try:
            from geoclip.model.location_encoder import LocationEncoder as _GeoCLIPLocationEncoder
        except ImportError as exc:
            raise ModelNotAvailableError(
                f"cannot import geoclip's location encoder ({exc}); "
                "reinstall with `pip install --no-deps geoclip`"
            ) from None
        module = _GeoCLIPLocationEncoder(from_pretrained=False)
        module.load_state_dict(_torch_load(weights_file))
        self.device = resolve_device(device, setting="encoders.device")
        self.module = module.to(self.device).eval()
        self.batch_size = batch_size
        self.logit_scale = float(torch.as_tensor(_torch_load(scale_file)).exp())
        self.weights_hash = fingerprint_files([weights_file])

    def __repr__(self) -> str:
        return f"GeoCLIPLocationEncoder(device={self.device}, logit_scale={self.logit_scale:.4g})"

    def encode(self, latlon: np.ndarray) -> np.ndarray:
        """(N, 2) latitude/longitude in degrees -> (N, 512) float32, rows L2-normalised."""
        import torch

        coords = np.asarray(latlon, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(
                f"location encoder input must have shape (N, 2) as (lat, lon), got {coords.shape}"
            )
        lat, lon = validate_coordinates(coords[:, 0], coords[:, 1], what="coordinates to embed")
        coords = np.stack([lat, lon], axis=1).astype(np.float32)
        out = np.empty((len(coords), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(coords), self.batch_size):
                chunk = torch.from_numpy(coords[start : start + self.batch_size]).to(self.device)
                out[start : start + len(chunk)] = _l2_normalise(self.module(chunk)).cpu().numpy()
        return out


@register_location_encoder("geoclip")
def _geoclip_location_factory(config: EncoderConfig) -> LocationEncoder:
    return GeoCLIPLocationEncoder(device=config.device)
