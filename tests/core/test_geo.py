"""Geo core: distances against known pairs, antimeridian/poles, validation, reverse geocoding, GeoScore."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geosleuth.errors import InvalidCoordinateError
from geosleuth.geo import (
    ReverseGeocoder,
    geodesic_km,
    geoscore,
    haversine_km,
    normalize_lon,
    validate_coordinate,
    validate_coordinates,
)

PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)


def test_paris_london_geodesic_and_haversine():
    # Reference: Karney's geodesic on WGS-84 gives 343.92 km for these city-centre coordinates;
    # the sphere (R = 6371.0088 km) gives 343.56 km.
    assert geodesic_km(*PARIS, *LONDON) == pytest.approx(343.92, abs=0.05)
    assert haversine_km(*PARIS, *LONDON) == pytest.approx(343.56, abs=0.05)


def test_distances_are_vectorised_and_broadcast():
    lats = np.array([PARIS[0], 0.0, 10.0])
    lons = np.array([PARIS[1], 0.0, 10.0])
    d = geodesic_km(lats, lons, LONDON[0], LONDON[1])
    assert d.shape == (3,)
    assert d[0] == pytest.approx(float(geodesic_km(*PARIS, *LONDON)))
    h = haversine_km(lats, lons, lats, lons)
    assert np.allclose(h, 0.0)


def test_antimeridian_is_short_not_around_the_world():
    # 0.2 degrees of longitude at the equator, across the date line.
    assert geodesic_km(0.0, 179.9, 0.0, -179.9) == pytest.approx(22.26, abs=0.05)
    assert haversine_km(0.0, 179.9, 0.0, -179.9) == pytest.approx(22.24, abs=0.05)


def test_poles():
    # Pole to pole along a meridian is about 20,004 km on WGS-84; longitude is irrelevant at a pole.
    assert geodesic_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(20003.93, abs=0.1)
    assert geodesic_km(90.0, 0.0, 90.0, 123.0) == pytest.approx(0.0, abs=1e-6)
    assert haversine_km(90.0, 0.0, -90.0, 77.0) == pytest.approx(math.pi * 6371.0088, rel=1e-9)


@pytest.mark.parametrize(
    ("lat", "lon", "message"),
    [
        (91.0, 0.0, "latitude 91.0 is outside [-90, 90]"),
        (-90.5, 0.0, "outside [-90, 90]"),
        (0.0, 400.0, "longitude 400.0"),
        (float("nan"), 0.0, "not a finite"),
        ("north", 0.0, "must be numbers"),
        (None, 1.0, "must be numbers"),
    ],
)
def test_invalid_coordinates_are_rejected_with_a_clear_message(lat, lon, message):
    with pytest.raises(InvalidCoordinateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_coordinate(lat, lon, what="photo.jpg")


def test_longitude_is_normalised():
    assert validate_coordinate(10, 190) == (10.0, -170.0)
    assert validate_coordinate(10, 180) == (10.0, -180.0)
    assert normalize_lon(-181.0) == pytest.approx(179.0)
    _, lons = validate_coordinates([0, 0], [360.0, -190.0])
    assert lons.tolist() == [0.0, 170.0]


def test_vectorised_validation_names_the_bad_row():
    with pytest.raises(InvalidCoordinateError, match=r"row 2"):
        validate_coordinates([0.0, 1.0, 95.0], [0.0, 1.0, 2.0])


def test_geoscore():
    assert float(geoscore(0.0)) == pytest.approx(5000.0)
    assert float(geoscore(1492.7)) == pytest.approx(5000.0 / math.e)
    assert geoscore([0.0, 20000.0]).tolist()[1] < 10.0


@pytest.fixture(scope="module")
def geocoder() -> ReverseGeocoder:
    return ReverseGeocoder()


@pytest.mark.parametrize(
    ("lat", "lon", "cc", "city", "continent"),
    [
        (38.7223, -9.1393, "PT", "Lisbon", "Europe"),
        (35.6762, 139.6503, "JP", None, "Asia"),
        (-33.8688, 151.2093, "AU", None, "Oceania"),
        (-22.9068, -43.1729, "BR", "Rio de Janeiro", "South America"),
        (40.7128, -74.0060, "US", None, "North America"),
    ],
)
def test_reverse_geocoding_known_points(geocoder, lat, lon, cc, city, continent):
    place = geocoder.lookup(lat, lon)
    assert place.country_code == cc
    assert place.continent == continent
    if city:
        assert place.city == city
    assert place.city_distance_km is not None and place.city_distance_km < 30


def test_hierarchy_string(geocoder):
    place = geocoder.lookup(38.7223, -9.1393)
    assert place.hierarchy() == "Europe > Portugal > Lisbon"


def test_reverse_geocoding_in_one_batch_equals_one_by_one(geocoder):
    # Speed is measured by bench/bench_geocoder.py; here: a batch gives the same places, in order.
    rng = np.random.default_rng(0)
    pts = list(zip(rng.uniform(-60, 70, 300), rng.uniform(-180, 180, 300), strict=True))
    places = geocoder.lookup_many(pts)
    assert len(places) == 300
    assert places[::37] == [geocoder.lookup(lat, lon) for lat, lon in pts[::37]]
    assert geocoder.lookup_many([]) == []


def test_bad_coordinates_in_a_batch_name_the_row(geocoder):
    with pytest.raises(InvalidCoordinateError, match=r"row 1.*latitude 95.0"):
        geocoder.lookup_many([(0.0, 0.0), (95.0, 10.0)])
    with pytest.raises(InvalidCoordinateError, match=r"row 0.*must be numbers"):
        geocoder.lookup_many([("north", 10.0)])


def test_reverse_geocoding_prints_nothing(capfd):
    ReverseGeocoder().lookup(48.85, 2.35)
    out, _ = capfd.readouterr()
    assert out == ""


@pytest.mark.parametrize(
    ("name", "code"),
    [("Portugal", "PT"), ("united states", "US"), ("USA", "US"), ("Côte d'Ivoire", "CI"),
     ("The Netherlands", "NL"), ("UK", "GB"), ("JP", "JP"), ("Atlantis", None), ("", None),
     ("DEU", "DE"), ("Russian Federation", "RU"), ("Türkiye", "TR"), ("Kosovo", "XK"), ("Holland", "NL"),
     ("Guadeloupe", "GP"), ("Réunion", "RE")],
)
def test_country_names_normalise_to_iso_codes(geocoder, name, code):
    assert geocoder.country_code(name) == code
