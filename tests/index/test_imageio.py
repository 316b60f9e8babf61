"""Safe image loading: odd files load as upright RGB, bad files raise one clear ImageLoadError."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from geosleuth.errors import ImageLoadError
from geosleuth.imageio import load_image, read_exif
from geosleuth.testing import photos

G = ExifTags.GPS


def _close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


# --- EXIF GPS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (48.8566, 2.3522),  # N/E Paris
        (-33.8688, 151.2093),  # S/E Sydney
        (40.7128, -74.0060),  # N/W New York
        (-22.9068, -43.1729),  # S/W Rio de Janeiro
        (64.1466, -21.9426),  # N/W Reykjavik
    ],
)
def test_exif_gps_is_read_with_hemispheres(tmp_path: Path, lat: float, lon: float) -> None:
    path = photos.write_jpeg_with_gps(tmp_path / "gps.jpg", lat, lon)

    exif = read_exif(path)
    loaded = load_image(path)

    assert exif.gps is not None
    assert exif.gps.lat == pytest.approx(lat, abs=1e-6)
    assert exif.gps.lon == pytest.approx(lon, abs=1e-6)
    assert loaded.ref.exif == exif
    assert exif.taken_at == "2021:05:06 07:08:09"
    assert exif.camera == "Canon EOS 5D"  # make 'Canon' is not repeated


def test_read_exif_accepts_an_opened_image(tmp_path: Path) -> None:
    path = photos.write_jpeg_with_gps(tmp_path / "gps.jpg", -1.2921, 36.8219)
    with Image.open(path) as im:
        exif = read_exif(im)
    assert exif.gps is not None and exif.gps.lat == pytest.approx(-1.2921, abs=1e-6)


def test_photo_without_exif_has_no_gps(tmp_path: Path) -> None:
    loaded = load_image(photos.write_photo(tmp_path / "plain.jpg"))
    assert loaded.ref.exif is not None
    assert loaded.ref.exif.gps is None and loaded.ref.exif.taken_at is None and loaded.ref.exif.camera is None


_GOOD = photos.gps_ifd(10.5, 20.25)


@pytest.mark.parametrize(
    "gps",
    [
        pytest.param(
            {**_GOOD, G.GPSLatitude: (IFDRational(1, 0), IFDRational(0, 1), IFDRational(0, 1))},
            id="zero-denominator",
        ),
        pytest.param({k: v for k, v in _GOOD.items() if k != G.GPSLatitudeRef}, id="no-hemisphere"),
        pytest.param({**_GOOD, G.GPSLongitudeRef: "X"}, id="bad-hemisphere"),
        pytest.param({**_GOOD, G.GPSLatitude: photos.dms(95.0)}, id="latitude-95"),
        pytest.param({**_GOOD, G.GPSLongitude: photos.dms(181.0)}, id="longitude-181"),
        pytest.param(
            {**_GOOD, G.GPSLatitude: (IFDRational(10, 1), IFDRational(61, 1), IFDRational(0, 1))},
            id="61-minutes",
        ),
        pytest.param({**_GOOD, G.GPSStatus: "V"}, id="status-void"),
        pytest.param(photos.gps_ifd(0.0, 0.0), id="null-island"),
        pytest.param({G.GPSLatitudeRef: "N", G.GPSLongitudeRef: "E"}, id="refs-only"),
    ],
)
def test_garbage_gps_becomes_none_and_the_image_still_loads(tmp_path: Path, gps: dict) -> None:
    path = photos.write_jpeg_with_gps_ifd(tmp_path / "bad-gps.jpg", gps)
    assert read_exif(path).gps is None
    loaded = load_image(path)
    assert loaded.ref.exif is not None and loaded.ref.exif.gps is None
    assert loaded.image.size == (48, 32)


def test_gps_values_of_the_wrong_type_become_none() -> None:
    im = Image.new("RGB", (8, 8))
    gps = im.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    gps.update(
        {G.GPSLatitudeRef: "N", G.GPSLatitude: "garbage", G.GPSLongitudeRef: "E", G.GPSLongitude: (1, 2, 3)}
    )
    assert read_exif(im).gps is None


def test_corrupt_exif_block_does_not_stop_loading(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = photos.write_photo(tmp_path / "junk-exif.jpg", exif=b"Exif\x00\x00" + rng.bytes(200))
    loaded = load_image(path)
    assert loaded.image.size == (48, 32)
    assert loaded.ref.exif is not None and loaded.ref.exif.gps is None


# --- pixels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    path = photos.write_oriented_jpeg(tmp_path / f"o{orientation}.jpg", orientation, upright_size=(48, 32))
    loaded = load_image(path)
    im = loaded.image
    assert im.mode == "RGB"
    assert im.size == (48, 32)
    assert (loaded.ref.width, loaded.ref.height) == (48, 32)
    assert _close(im.getpixel((6, 4)), photos.RED)  # the red quadrant is top-left again
    assert _close(im.getpixel((40, 28)), photos.BLUE)


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    im = load_image(photos.write_cmyk_jpeg(tmp_path / "cmyk.jpg")).image
    assert im.mode == "RGB"
    assert _close(im.getpixel((10, 10)), (255, 0, 0))


@pytest.mark.parametrize(("value", "grey"), [(32768, 128), (65535, 255), (4096, 16)])
def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path, value: int, grey: int) -> None:
    im = load_image(photos.write_16bit_png(tmp_path / "deep.png", value=value)).image
    assert im.mode == "RGB"
    assert _close(im.getpixel((5, 5)), (grey, grey, grey), tol=1)


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    im = load_image(photos.write_palette_png_with_transparency(tmp_path / "p.png")).image
    assert im.mode == "RGB"
    assert im.getpixel((2, 2)) == (255, 255, 255)
    assert im.getpixel((40, 2)) == photos.RED


@pytest.mark.parametrize(("mode", "opaque"), [("RGBA", photos.RED), ("LA", (0, 0, 0))])
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str, opaque: tuple[int, int, int]) -> None:
    im = load_image(photos.write_alpha_png(tmp_path / f"{mode}.png", mode=mode)).image
    assert im.mode == "RGB"
    assert im.getpixel((2, 2)) == (255, 255, 255)
    assert im.getpixel((40, 2)) == opaque


@pytest.mark.parametrize(("name", "orientation"), [("big.jpg", 1), ("big.png", 1), ("big6.jpg", 6)])
def test_max_pixels_downscales_keeping_aspect_ratio(tmp_path: Path, name: str, orientation: int) -> None:
    if name.endswith(".png"):
        path = photos.write_photo(tmp_path / name, image=photos.pattern_image((800, 600)))
    else:
        path = photos.write_oriented_jpeg(tmp_path / name, orientation, upright_size=(800, 600))
    loaded = load_image(path, max_pixels=10_000)
    w, h = loaded.image.size
    assert w * h <= 10_000
    assert w * h >= 9_000  # not needlessly small
    assert w / h == pytest.approx(800 / 600, rel=0.03)
    assert (loaded.ref.width, loaded.ref.height) == (800, 600)  # the file's own size, upright
    assert _close(loaded.image.getpixel((w // 4, h // 4)), photos.RED, tol=20)


def test_small_image_is_not_upscaled(tmp_path: Path) -> None:
    loaded = load_image(photos.write_photo(tmp_path / "small.jpg"), max_pixels=1_000_000)
    assert loaded.image.size == (48, 32)


def test_ref_records_path_as_given_and_sha256_of_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = photos.write_photo(tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)
    loaded = load_image("a.jpg")
    assert loaded.ref.path == "a.jpg"
    assert loaded.ref.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# --- files that must be refused ------------------------------------------------------------------


def _corrupt_png(path: Path) -> Path:
    photos.write_photo(path, image=photos.pattern_image((64, 64)), format="PNG")
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\xff" * 8  # garble the zlib stream of the pixels
    path.write_bytes(bytes(data))
    return path


BAD_FILES = {
    "truncated": (lambda d: photos.write_truncated_jpeg(d / "cut.jpg"), "truncated"),
    "zero-bytes": (lambda d: photos.write_empty_file(d / "empty.jpg"), "empty"),
    "text-named-jpg": (lambda d: photos.write_text_file(d / "notes.jpg"), "not an image"),
    "missing": (lambda d: d / "nowhere.jpg", "does not exist"),
    "directory": (lambda d: d, "directory"),
    "bomb-header": (lambda d: photos.write_png_header_claiming(d / "bomb.png", 50_000, 50_000), "too large"),
    "corrupt-png": (lambda d: _corrupt_png(d / "broken.png"), "corrupt"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_files_raise_image_load_error_naming_file_and_reason(tmp_path: Path, kind: str) -> None:
    make, reason = BAD_FILES[kind]
    path = make(tmp_path)
    pixel_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert reason in info.value.reason
    assert pixel_limit == Image.MAX_IMAGE_PIXELS  # Pillow's global limit untouched


def test_pixel_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    path = photos.write_png_header_claiming(tmp_path / "big-header.png", 4000, 4000)
    with pytest.raises(ImageLoadError, match=r"4000x4000 = 16,000,000 pixels, limit 1,000,000"):
        load_image(path, max_decode_pixels=1_000_000)


def test_read_exif_refuses_bad_files_the_same_way(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="not an image"):
        read_exif(photos.write_text_file(tmp_path / "notes.jpg"))


def test_heic_without_pillow_heif_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # make `import pillow_heif` fail
    path = photos.write_heic_stub(tmp_path / "phone.heic")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert "pip install 'geosleuth[heic]'" in info.value.reason
    assert str(path) in str(info.value)
