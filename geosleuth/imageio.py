"""Safe image loading: every input either becomes an upright RGB picture or one clear ImageLoadError.

What is handled: EXIF orientation (applied), alpha (composited on white), palette transparency,
CMYK, 16-bit and float greyscale (scaled, not clipped), multi-frame files (first frame), HEIC/HEIF
(with the optional ``pillow-heif``), decompression bombs (refused from the header's pixel count,
before any pixels are decoded), and empty, truncated, corrupt or non-image files (refused).

EXIF is read defensively: unreadable or implausible GPS data becomes ``None``, never a crash and
never a made-up coordinate.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from geosleuth.errors import ImageLoadError
from geosleuth.types import Coordinate, ExifInfo, ImageRef

# Pillow's own default warning threshold (about 89.5 megapixels, e.g. 10,937 x 8,181). Checked
# against the header before decoding; Pillow's global limit is never changed.
DEFAULT_MAX_DECODE_PIXELS = 89_478_485

# ISO-BMFF brands of HEIF-family files (HEIC photos from phones, HEIF image sequences).
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_HEIC_HINT = "HEIC/HEIF images need the optional pillow-heif package: pip install 'geosleuth[heic]'"

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded picture and what it is.

    ``image`` is RGB with EXIF orientation applied (and downscaled if ``max_pixels`` asked for it);
    ``ref.width``/``ref.height`` describe the file itself (after orientation, before downscaling).
    """

    image: Image.Image
    ref: ImageRef


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = None,
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
) -> LoadedImage:
    """Read ``path`` as an upright RGB image, or raise :class:`ImageLoadError` saying why not.

    ``max_pixels``: downscale (keeping the aspect ratio) so width * height <= max_pixels.
    ``max_decode_pixels``: refuse files whose header claims more pixels than this.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    data = _read_bytes(path)
    im = _open(path, data, max_decode_pixels)
    try:
        raw_width, raw_height = im.size
        if max_pixels is not None and im.format in ("JPEG", "MPO") and raw_width * raw_height > max_pixels:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale (never below the target): much faster
            # for big phone photos; the exact resize happens below.
            scale = math.sqrt(max_pixels / (raw_width * raw_height))
            im.draft(None, (max(1, int(raw_width * scale)), max(1, int(raw_height * scale))))
        im.load()  # before EXIF: reading a PNG's EXIF decodes it, and exif_info hides errors
        exif = exif_info(im)
        upright = ImageOps.exif_transpose(im)
        swapped = upright.size != im.size
        rgb = _to_rgb(upright)
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise ImageLoadError(
            path, f"the file is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        im.close()

    width, height = (raw_height, raw_width) if swapped else (raw_width, raw_height)
    if max_pixels is not None and rgb.width * rgb.height > max_pixels:
        rgb = rgb.resize(
            _fit_size(rgb.width, rgb.height, max_pixels), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    ref = ImageRef(
        path=str(path), sha256=hashlib.sha256(data).hexdigest(), width=width, height=height, exif=exif
    )
    return LoadedImage(image=rgb, ref=ref)


def read_exif(path_or_image: str | os.PathLike[str] | Image.Image) -> ExifInfo:
    """GPS (validated, or None), DateTimeOriginal and camera of a file or an opened image.

    A file is opened with the same checks as :func:`load_image` (raising ImageLoadError), but its
    pixels are only decoded when the format keeps EXIF after them (some PNGs).
    """
    if isinstance(path_or_image, Image.Image):
        return exif_info(path_or_image)
    data = _read_bytes(path_or_image)
    with _open(path_or_image, data, DEFAULT_MAX_DECODE_PIXELS) as im:
        return exif_info(im)


def exif_info(im: Image.Image) -> ExifInfo:
    """EXIF fields of an opened image; anything unreadable is None."""
    try:
        exif = im.getexif()
    except Exception:  # Pillow raises many types on corrupt EXIF; no EXIF is then the truth we have
        return ExifInfo()
    return ExifInfo(gps=_gps(exif), taken_at=_taken_at(exif), camera=_camera(exif))


# ---------------------------------------------------------------------------------------------
# Opening


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError(path, "the file does not exist") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "this is a directory, not an image file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied: the file is not readable") from None
    except OSError as exc:
        raise ImageLoadError(path, f"the file cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ImageLoadError(path, "the file is empty (0 bytes)")
    return data


def _is_heif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


def _open(path: str | os.PathLike[str], data: bytes, max_decode_pixels: int) -> Image.Image:
    """Open lazily (header only) and check the pixel count before anything is decoded."""
    try:
        im = _pillow_open(path, data)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            path, f"the image is too large to decode safely ({exc}); downscale it first"
        ) from None
    width, height = im.size
    if width < 1 or height < 1:
        im.close()
        raise ImageLoadError(path, f"the header gives an empty size {width}x{height}")
    if width * height > max_decode_pixels:
        im.close()
        raise ImageLoadError(
            path,
            f"the image is too large to decode safely ({width}x{height} = {width * height:,} pixels, limit "
            f"{max_decode_pixels:,}); downscale it first",
        )
    return im


def _pillow_open(path: str | os.PathLike[str], data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if not _is_heif(data):
            kind = "it looks like a text file" if _looks_like_text(data) else "the format is not recognised"
            raise ImageLoadError(path, f"not an image file Pillow can read ({kind})") from None
    except Image.DecompressionBombError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise ImageLoadError(path, f"the image header is corrupt ({type(exc).__name__}: {exc})") from None
    # HEIF: Pillow needs the optional plug-in, registered only now that a HEIF file is actually seen.
    try:
        import pillow_heif
    except ImportError:
        raise ImageLoadError(path, _HEIC_HINT) from None
    pillow_heif.register_heif_opener()
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise
    except Exception as exc:  # the HEIF plug-in's errors are not Pillow's
        raise ImageLoadError(
            path, f"the HEIF image is corrupt or unsupported ({type(exc).__name__}: {exc})"
        ) from None


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 32 or b in (9, 10, 13) for b in head)


# ---------------------------------------------------------------------------------------------
# Pixels


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode in _ALPHA_MODES or (mode in {"P", "L", "RGB", "1"} and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im
    if mode in _HIGH_BIT_DEPTH_MODES:
        return _high_bit_depth_to_rgb(im)
    try:
        return im.convert("RGB")
    except ValueError:
        raise ValueError(f"colour mode {mode!r} cannot be converted to RGB") from None


def _high_bit_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale -> 8-bit RGB by scaling (Pillow's convert would clip at 255)."""
    values = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / top  # [0, 1] floats, else stretch to the maximum
    elif im.mode.startswith("I;16") or float(values.max(initial=0)) > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    grey = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > max_pixels and (w > 1 or h > 1):  # floating-point rounding at the edge
        w, h = max(1, w - (w >= h)), max(1, h - (h > w))
    return w, h


# ---------------------------------------------------------------------------------------------
# EXIF


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _number(value: Any) -> float:
    """A rational/int/float EXIF value as a float (NaN when not a number, e.g. x/0)."""
    if isinstance(value, (bool, str, bytes)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan


def _dms(value: Any) -> float | None:
    """Degrees, minutes, seconds (each a rational) -> decimal degrees; None when malformed."""
    if isinstance(value, (list, tuple)):
        if not 1 <= len(value) <= 3:
            return None
        parts = [_number(v) for v in value]
    else:
        parts = [_number(value)]
    parts += [0.0] * (3 - len(parts))
    degrees, minutes, seconds = parts
    if not all(math.isfinite(p) and p >= 0 for p in parts) or minutes >= 60 or seconds > 60:
        return None
    return degrees + minutes / 60.0 + seconds / 3600.0


def _gps(exif: Image.Exif) -> Coordinate | None:
    try:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except Exception:  # corrupt GPS IFD pointer
        return None
    if not gps:
        return None
    # 'V' = measurement void: the receiver had no fix, whatever numbers follow.
    if (_text(gps.get(ExifTags.GPS.GPSStatus)) or "A").upper().startswith("V"):
        return None
    lat_ref = (_text(gps.get(ExifTags.GPS.GPSLatitudeRef)) or "").upper()[:1]
    lon_ref = (_text(gps.get(ExifTags.GPS.GPSLongitudeRef)) or "").upper()[:1]
    # Without a hemisphere the sign is unknown: a guess could be thousands of km off.
    if lat_ref not in ("N", "S") or lon_ref not in ("E", "W"):
        return None
    lat = _dms(gps.get(ExifTags.GPS.GPSLatitude))
    lon = _dms(gps.get(ExifTags.GPS.GPSLongitude))
    if lat is None or lon is None or lat > 90.0 or lon > 180.0:
        return None
    if lat == 0.0 and lon == 0.0:  # what many devices write when they have no fix
        return None
    return Coordinate(lat=-lat if lat_ref == "S" else lat, lon=-lon if lon_ref == "W" else lon)


def _taken_at(exif: Image.Exif) -> str | None:
    try:
        value = _text(exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal))
    except Exception:  # corrupt Exif IFD pointer
        return None
    # Blank dates are written as '    :  :     :  :  ' by some cameras.
    return value if value and any(ch.isdigit() and ch != "0" for ch in value) else None


def _camera(exif: Image.Exif) -> str | None:
    make = _text(exif.get(ExifTags.Base.Make))
    model = _text(exif.get(ExifTags.Base.Model))
    if make and model and model.lower().startswith(make.lower()):
        return model  # 'Canon' + 'Canon EOS 5D' -> 'Canon EOS 5D'
    return " ".join(part for part in (make, model) if part) or None
