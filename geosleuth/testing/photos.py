"""Write small test photos: EXIF GPS, orientation, odd colour modes and broken files of every kind.

Each function writes one file and returns its path. Pictures are tiny and deterministic, with
known content so tests can check what a loader made of them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

RED = (220, 20, 20)
BLUE = (20, 20, 220)
WHITE = (255, 255, 255)

# What exif_transpose does for each EXIF orientation value; the file stores the inverse.
_ORIENTATION_INVERSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # exif_transpose turns it by ROTATE_270
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Decimal degrees (>= 0) as EXIF (degrees, minutes, seconds) rationals, seconds to 1/10000."""
    degrees = int(value)
    minutes_float = (value - degrees) * 60.0
    minutes = int(minutes_float)
    seconds = round((minutes_float - minutes) * 60.0 * 10000)
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(seconds, 10000)


def gps_ifd(lat: float, lon: float) -> dict[int, Any]:
    """A well-formed GPS IFD for (lat, lon) with N/S/E/W references."""
    return {
        ExifTags.GPS.GPSVersionID: b"\x02\x03\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "N" if lat >= 0 else "S",
        ExifTags.GPS.GPSLatitude: dms(abs(lat)),
        ExifTags.GPS.GPSLongitudeRef: "E" if lon >= 0 else "W",
        ExifTags.GPS.GPSLongitude: dms(abs(lon)),
    }


def make_exif(
    *,
    gps: Mapping[int, Any] | None = None,
    taken_at: str | None = None,
    make: str | None = None,
    model: str | None = None,
    orientation: int | None = None,
) -> Image.Exif:
    """An EXIF block with the given GPS IFD (raw tag -> value), DateTimeOriginal, camera, orientation."""
    exif = Image.Exif()
    if make is not None:
        exif[ExifTags.Base.Make] = make
    if model is not None:
        exif[ExifTags.Base.Model] = model
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    if taken_at is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = taken_at
    if gps is not None:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    return exif


def pattern_image(size: tuple[int, int] = (48, 32)) -> Image.Image:
    """Blue picture with a red top-left quadrant: shows which way up an image is."""
    width, height = size
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, width // 2, height // 2))
    return im


def write_photo(
    path: str | Path,
    *,
    image: Image.Image | None = None,
    size: tuple[int, int] = (48, 32),
    format: str | None = None,
    exif: Image.Exif | None = None,
    **save_options: Any,
) -> Path:
    """Save ``image`` (default: :func:`pattern_image`) with optional EXIF; format from the suffix."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    im = image if image is not None else pattern_image(size)
    if exif is not None:
        save_options["exif"] = exif
    if (format or out.suffix.lstrip(".")).upper() in ("JPG", "JPEG"):
        save_options.setdefault("quality", 95)
    im.save(out, format=format, **save_options)
    return out


def write_jpeg_with_gps(
    path: str | Path,
    lat: float,
    lon: float,
    *,
    taken_at: str | None = "2021:05:06 07:08:09",
    make: str | None = "Canon",
    model: str | None = "Canon EOS 5D",
    size: tuple[int, int] = (48, 32),
) -> Path:
    """A JPEG whose EXIF GPS IFD says (lat, lon), as a camera writes it (DMS rationals + refs)."""
    exif = make_exif(gps=gps_ifd(lat, lon), taken_at=taken_at, make=make, model=model)
    return write_photo(path, size=size, exif=exif)


def write_jpeg_with_gps_ifd(
    path: str | Path, gps: Mapping[int, Any], *, size: tuple[int, int] = (48, 32)
) -> Path:
    """A JPEG with an arbitrary (possibly malformed) GPS IFD: raw tag number -> value."""
    return write_photo(path, size=size, exif=make_exif(gps=gps))


def write_oriented_jpeg(
    path: str | Path, orientation: int, *, upright_size: tuple[int, int] = (48, 32)
) -> Path:
    """A JPEG whose stored pixels need EXIF ``orientation`` (1-8) applied to show
    :func:`pattern_image` of ``upright_size`` (red quadrant top-left)."""
    if orientation not in _ORIENTATION_INVERSE:
        raise ValueError(f"EXIF orientation must be 1-8, got {orientation}")
    upright = pattern_image(upright_size)
    method = _ORIENTATION_INVERSE[orientation]
    stored = upright if method is None else upright.transpose(method)
    return write_photo(path, image=stored, exif=make_exif(orientation=orientation))


def write_cmyk_jpeg(path: str | Path, *, size: tuple[int, int] = (48, 32)) -> Path:
    """A CMYK JPEG of pure red (C=0, M=255, Y=255, K=0)."""
    return write_photo(path, image=Image.new("CMYK", size, (0, 255, 255, 0)), format="JPEG")


def write_16bit_png(path: str | Path, *, value: int = 32768, size: tuple[int, int] = (48, 32)) -> Path:
    """A 16-bit greyscale PNG filled with ``value`` (0-65535); 32768 is mid-grey (about 128/255)."""
    pixels = np.full((size[1], size[0]), value, dtype=np.uint16)
    return write_photo(path, image=Image.fromarray(pixels), format="PNG")


def write_palette_png_with_transparency(path: str | Path, *, size: tuple[int, int] = (48, 32)) -> Path:
    """A palette PNG: left half palette index 0 (black, fully transparent), right half index 1 (red)."""
    width, height = size
    im = Image.new("P", size, 0)
    im.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    im.paste(1, (width // 2, 0, width, height))
    return write_photo(path, image=im, format="PNG", transparency=0)


def write_alpha_png(path: str | Path, *, mode: str = "RGBA", size: tuple[int, int] = (48, 32)) -> Path:
    """An RGBA (red) or LA (black) PNG: left half fully transparent, right half opaque."""
    width, height = size
    if mode == "RGBA":
        im = Image.new("RGBA", size, (*RED, 0))
        im.paste((*RED, 255), (width // 2, 0, width, height))
    elif mode == "LA":
        im = Image.new("LA", size, (0, 0))
        im.paste((0, 255), (width // 2, 0, width, height))
    else:
        raise ValueError(f"mode must be RGBA or LA, got {mode!r}")
    return write_photo(path, image=im, format="PNG")


def write_truncated_jpeg(path: str | Path, *, keep: float = 0.5, size: tuple[int, int] = (256, 192)) -> Path:
    """A JPEG cut off after ``keep`` of its bytes (header intact, scan data missing)."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = write_photo(path, image=noise, format="JPEG")
    data = out.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def write_empty_file(path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"")
    return out


def write_text_file(path: str | Path, text: str = "this is not a picture\n") -> Path:
    """A text file (name it .jpg to pose as a picture)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png_header_claiming(path: str | Path, width: int, height: int) -> Path:
    """A ~60-byte PNG whose header claims ``width`` x ``height`` 1-bit pixels (a decompression bomb's
    signature); it holds no real pixel data, so decoding it must never be attempted."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    out.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00"))
        + _png_chunk(b"IEND", b"")
    )
    return out


def write_heic_stub(path: str | Path) -> Path:
    """The first box of a HEIC file (ftyp, brand 'heic') and nothing else: recognisable as HEIC,
    not decodable. For testing the 'install pillow-heif' path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ftyp = b"ftypheic" + struct.pack(">I", 0) + b"mif1heic"
    out.write_bytes(struct.pack(">I", 8 + len(ftyp)) + ftyp + b"\x00" * 64)
    return out
