"""Country polygons: the numpy shapefile reader, Natural Earth's code quirks; place-name folding."""

from __future__ import annotations

import numpy as np
import pytest

from geosleuth.geo import fold_name
from geosleuth.geo.boundaries import CountryBoundaries, natural_earth_path


@pytest.fixture(scope="module")
def boundaries() -> CountryBoundaries:
    return CountryBoundaries.load()


def test_numpy_reader_gives_the_same_polygons_as_pyshp(boundaries):
    import shapefile
    import shapely
    import shapely.geometry

    with shapefile.Reader(str(natural_earth_path()), encoding="utf-8") as reader:
        reference = [shapely.geometry.shape(s.__geo_interface__) for s in reader.shapes()]
    assert len(reference) == len(boundaries.geometries) == len(boundaries.countries)
    codes = [c.code for c in boundaries.countries]
    syria = codes.index("SY")  # the one polygon changed on purpose: the Golan Heights gap is filled
    assert all(shapely.equals(a, b) for i, (a, b) in enumerate(zip(reference, boundaries.geometries, strict=True))
               if i != syria)
    golan = boundaries.geometries[syria].difference(reference[syria])
    assert golan.contains(shapely.Point(35.75, 33.0)) and 0.05 < golan.area < 0.2  # ~1,200 km2
    # Holes survive: Lesotho is a hole in South Africa, San Marino and the Vatican in Italy.
    za = boundaries.geometries[[c.code for c in boundaries.countries].index("ZA")]
    assert sum(len(p.interiors) for p in za.geoms) >= 1
    assert not za.contains(shapely.Point(28.2, -29.6))  # Maseru, Lesotho


def test_codes_use_iso_a2_eh_and_no_code_is_invented(boundaries):
    codes = [c.code for c in boundaries.countries]
    assert {"FR", "NO", "XK", "TW"} <= set(codes)  # "-99" / "CN-TW" in ISO_A2
    assert all(c is None or (len(c) == 2 and c.isalpha() and c.isupper()) for c in codes)
    nameless = sorted(c.name for c in boundaries.countries if c.code is None)
    assert "Bir Tawil" in nameless and "Spratly Islands" in nameless  # not NAME_EN's "Wake Island"


def test_point_in_polygon_is_vectorised(boundaries):
    lat = np.array([48.85, 0.0, -33.87, 90.0])
    lon = np.array([2.35, -30.0, 151.21, 0.0])
    index = boundaries.country_index(lat, lon)
    assert [boundaries.countries[i].code if i >= 0 else None for i in index] == ["FR", None, "AU", None]
    assert boundaries.country_index([], []).shape == (0,)


def test_a_file_that_is_not_natural_earth_is_refused(tmp_path):
    bogus = tmp_path / "countries.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="countries.zip"):
        CountryBoundaries.load(bogus)


@pytest.mark.parametrize(
    ("text", "key"),
    [("Côte d'Ivoire", "cote d ivoire"), ("  São   Paulo! ", "sao paulo"), ("Provence-Alpes-Côte d'Azur",
     "provence alpes cote d azur"), ("ZÜRICH", "zurich"), ("St. Petersburg", "st petersburg"), ("", "")],
)
def test_fold_name(text, key):
    assert fold_name(text) == key


def test_fold_name_can_keep_punctuation_for_the_hint_parser():
    assert fold_name("Within 20 km of Lima, Perú.", keep=",.") == "within 20 km of lima, peru."
    assert fold_name("Lima, Peru", keep=",.") == fold_name("Lima, Perú", keep=",.") == "lima, peru"
