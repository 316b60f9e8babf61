"""A synthetic geotagged gallery for tests and demos: small pictures whose look depends on the country.

Each country has a few fixed, real on-land anchor points (city centres well inside its borders);
every photo sits within a few km of one of them. Pictures are 64x64 by default: a country-specific
base colour with stripes of a country-specific angle and frequency, varied per photo (phase,
brightness, noise), so even a random CLIP-like encoder tends to place photos of one country
near each other. The table has MP16-Pro's columns (IMG_ID, AUTHOR, LAT, LON, neighbourhood,
city, county, state, region, country, country_code, continent), with the place columns filled
by reverse geocoding (and checked to be the intended country).

Runnable as a script: ``python -m geosleuth.testing.synthetic OUT_DIR [N_PER_COUNTRY]``.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from geosleuth.geo import ReverseGeocoder


@dataclass(frozen=True)
class SyntheticCountry:
    code: str  # ISO 3166-1 alpha-2
    anchors: tuple[tuple[float, float], ...]  # (lat, lon) of city centres well inside the country
    colour: tuple[int, int, int]
    stripe_angle_deg: float
    stripe_period_px: float


_C = SyntheticCountry
COUNTRIES: dict[str, SyntheticCountry] = {
    c.code: c
    for c in (
        _C("FR", ((48.8566, 2.3522), (45.7640, 4.8357), (43.6047, 1.4442)), (40, 70, 200), 0.0, 8.0),
        _C("JP", ((35.6762, 139.6503), (34.6937, 135.5023), (43.0618, 141.3545)), (220, 40, 60), 45.0, 6.0),
        _C("BR", ((-15.7939, -47.8828), (-23.5505, -46.6333), (-3.1190, -60.0217)), (30, 160, 60), 90.0, 10.0),
        _C("KE", ((-1.2921, 36.8219), (-0.3031, 36.0800), (0.5143, 35.2698)), (200, 140, 40), 135.0, 5.0),
        _C("US", ((39.7392, -104.9903), (41.8781, -87.6298), (39.0997, -94.5786)), (120, 120, 120), 20.0, 12.0),
        _C("AU", ((-23.6980, 133.8807), (-35.2809, 149.1300), (-31.9505, 115.8605)), (200, 90, 30), 70.0, 7.0),
        _C("IN", ((28.6139, 77.2090), (21.1458, 79.0882), (12.9716, 77.5946)), (150, 40, 170), 110.0, 9.0),
    )
}
DEFAULT_COUNTRIES = tuple(COUNTRIES)
MP16_COLUMNS = (
    "IMG_ID", "AUTHOR", "LAT", "LON", "neighbourhood", "city", "county", "state", "region",
    "country", "country_code", "continent",
)
JITTER_KM = 5.0
KM_PER_DEGREE = 111.32


def synthetic_photo(country: str, seed: int, size: int = 64) -> Image.Image:
    """One picture in ``country``'s style; ``seed`` varies phase, brightness and noise."""
    style = COUNTRIES[country.upper()]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = math.radians(style.stripe_angle_deg + rng.uniform(-8, 8))
    period = style.stripe_period_px * rng.uniform(0.9, 1.1)
    wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + rng.uniform(0, 2 * math.pi))
    base = np.asarray(style.colour, dtype=np.float64) * rng.uniform(0.8, 1.2)
    pixels = base[None, None, :] * (0.65 + 0.35 * wave[..., None]) + rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def jittered_point(
    anchor: tuple[float, float], rng: np.random.Generator, max_km: float = JITTER_KM
) -> tuple[float, float]:
    """A point within ``max_km`` of ``anchor`` (uniform over the disc)."""
    lat, lon = anchor
    r = max_km * math.sqrt(rng.uniform())
    theta = rng.uniform(0, 2 * math.pi)
    dlat = r * math.cos(theta) / KM_PER_DEGREE
    dlon = r * math.sin(theta) / (KM_PER_DEGREE * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


def make_synthetic_gallery(
    out_dir: str | Path,
    n_per_country: int,
    countries: Sequence[str] = DEFAULT_COUNTRIES,
    seed: int = 0,
    *,
    authors_per_country: int = 3,
    image_size: int = 64,
    image_format: str = "png",
    exif_gps: bool = False,
    geocoder: ReverseGeocoder | None = None,
    csv_name: str = "gallery.csv",
) -> Path:
    """Write ``n_per_country`` photos per country under ``out_dir/images/<CC>/`` and an MP16-style
    table ``out_dir/<csv_name>`` (IMG_ID = image path relative to ``out_dir``); return the table's path.

    ``image_format``: "png" or "jpeg"; ``exif_gps=True`` (JPEG only) also writes each photo's
    position into its EXIF GPS tags, so ``out_dir/images`` works as an image-folder source.
    Authors are ``<cc>-author-<j>``, assigned round-robin within each country.
    """
    from geosleuth.geo import ReverseGeocoder

    fmt = image_format.lower()
    if fmt not in ("png", "jpeg", "jpg"):
        raise ValueError(f"image_format must be png or jpeg, got {image_format!r}")
    if exif_gps and fmt == "png":
        raise ValueError("exif_gps needs image_format='jpeg' (cameras write GPS into JPEG EXIF)")
    if n_per_country < 1 or authors_per_country < 1:
        raise ValueError("n_per_country and authors_per_country must be >= 1")
    unknown = [c for c in countries if c.upper() not in COUNTRIES]
    if unknown:
        raise ValueError(f"no synthetic style for {unknown}; available: {', '.join(COUNTRIES)}")
    suffix = "png" if fmt == "png" else "jpg"
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for ci, code in enumerate(c.upper() for c in countries):
        style = COUNTRIES[code]
        for i in range(n_per_country):
            lat, lon = jittered_point(style.anchors[i % len(style.anchors)], rng)
            rel = f"images/{code}/{code}_{i:04d}.{suffix}"
            rows.append({
                "IMG_ID": rel, "AUTHOR": f"{code.lower()}-author-{i % authors_per_country}",
                "LAT": lat, "LON": lon, "_seed": seed * 1_000_003 + ci * 10_007 + i, "_code": code,
            })

    places = (geocoder or ReverseGeocoder()).lookup_many([(r["LAT"], r["LON"]) for r in rows])  # type: ignore[misc]
    for row, place in zip(rows, places, strict=True):
        if place.country_code != row["_code"]:
            raise AssertionError(
                f"synthetic point ({row['LAT']}, {row['LON']}) for {row['_code']} reverse-geocodes to "
                f"{place.country_code}: fix its anchor in geosleuth/testing/synthetic.py"
            )
        row.update({
            "neighbourhood": "", "city": place.city or "", "county": place.admin2 or "", "state": place.admin1 or "",
            "region": place.admin1 or "", "country": place.country or "", "country_code": place.country_code or "",
            "continent": place.continent or "",
        })

    for row in rows:
        path = out / str(row["IMG_ID"])
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = synthetic_photo(str(row["_code"]), int(row["_seed"]), image_size)  # type: ignore[call-overload]
        if fmt == "png":
            picture.save(path, format="PNG")
        else:
            from geosleuth.testing.photos import gps_ifd, make_exif

            exif = make_exif(gps=gps_ifd(float(row["LAT"]), float(row["LON"]))) if exif_gps else None  # type: ignore[arg-type]
            picture.save(path, format="JPEG", quality=92, **({"exif": exif} if exif is not None else {}))

    table = out / csv_name
    table.parent.mkdir(parents=True, exist_ok=True)
    with table.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MP16_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return table


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m geosleuth.testing.synthetic OUT_DIR [N_PER_COUNTRY]", file=sys.stderr)
        return 2
    print(make_synthetic_gallery(args[0], int(args[1]) if len(args) > 1 else 20))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
