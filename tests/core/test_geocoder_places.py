"""Reverse geocoding where the nearest-town method went wrong: borders, small states, open sea, the
antimeridian, the poles, and the disputed areas of Natural Earth's German point-of-view edition."""

from __future__ import annotations

import re

import pytest

from geosleuth.geo import ReverseGeocoder
from geosleuth.types import Candidate


@pytest.fixture(scope="module")
def geocoder() -> ReverseGeocoder:
    return ReverseGeocoder()


@pytest.mark.parametrize(
    ("lat", "lon", "code", "admin1", "city"),
    [
        (31.345, -109.545, "US", "Arizona", "Douglas"),  # US side of the Douglas / Agua Prieta border
        (31.320, -109.545, "MX", "Sonora", "Agua Prieta"),  # 2.8 km south, in Mexico
        (31.770, -106.440, "US", "Texas", "El Paso"),
        (31.720, -106.450, "MX", "Chihuahua", "Ciudad Juarez"),
        (47.560, 7.590, "CH", "Basel-City", "Basel"),  # three countries within 4 km
        (47.595, 7.620, "DE", "Baden-Wuerttemberg", "Weil am Rhein"),
        (47.590, 7.560, "FR", None, "Saint-Louis"),
        (82.5018, -62.3481, "CA", "Nunavut", None),  # Alert, Nunavut: the old lookup said Greenland
        (65.750, -168.930, "US", "Alaska", None),  # Little Diomede; Big Diomede (Russia) is 4 km west
        (65.780, -169.060, "RU", None, None),
    ],
)
def test_border_points_get_the_country_whose_polygon_holds_them(geocoder, lat, lon, code, admin1, city):
    place = geocoder.lookup(lat, lon)
    assert place.country_code == code and not place.at_sea
    if admin1:
        assert place.admin1 == admin1
    if city:
        assert place.city == city


@pytest.mark.parametrize(
    ("lat", "lon", "code"),
    [(41.9029, 12.4534, "VA"), (43.9424, 12.4578, "SM"), (43.7384, 7.4246, "MC"), (47.141, 9.521, "LI")],
)
def test_small_states(geocoder, lat, lon, code):
    assert geocoder.lookup(lat, lon).country_code == code


def test_region_and_city_always_come_from_the_polygon_country(geocoder):
    # Near a border the nearest town overall is often across it; the town used is the nearest one
    # in the country found, so the hierarchy never mixes two countries.
    for lat in (31.30, 31.31, 31.32, 31.33, 31.34, 31.35):
        place = geocoder.lookup(lat, -109.545)
        expected = {"US": "Arizona", "MX": "Sonora"}[place.country_code]
        assert place.admin1 == expected


@pytest.mark.parametrize(
    ("lat", "lon", "off"),
    [(30.0, -40.0, "PT"), (55.5, 3.5, "NL"), (0.0, -150.0, "KI")],  # mid-Atlantic, North Sea, central Pacific
)
def test_open_sea_has_no_country_and_says_how_far_off_which_coast(geocoder, lat, lon, off):
    place = geocoder.lookup(lat, lon)
    assert place.at_sea and place.country_code is None and place.country is None
    assert place.continent is None and place.admin1 is None and place.city is None
    assert place.nearest_country_code == off and place.coast_km is not None and place.coast_km > 100
    assert re.fullmatch(r"at sea, [\d,]+ km off .+", place.hierarchy())


def test_distance_off_the_coast_is_measured_on_the_sphere(geocoder):
    # North Sea point 1 degree of longitude west of the Dutch coast at Texel (about 53.1 N, 4.75 E):
    # at that latitude 1 degree is about 67 km, not 111 km.
    place = geocoder.lookup(53.1, 3.7)
    assert place.at_sea and place.nearest_country_code == "NL"
    assert 55 < place.coast_km < 80


def test_coast_tolerance_puts_beach_photos_on_land_and_keeps_boats_at_sea():
    # Namibia's Skeleton Coast, no town near: 0.6 km outside Natural Earth's generalised coastline.
    place = ReverseGeocoder().lookup(-20.0, 13.016)
    assert place.country_code == "NA" and not place.at_sea and 0 < place.coast_km < 1.0
    strict = ReverseGeocoder(coast_tolerance_km=0.0).lookup(-20.0, 13.016)
    assert strict.at_sea and strict.nearest_country_code == "NA"
    with pytest.raises(ValueError, match="coast_tolerance_km"):
        ReverseGeocoder(coast_tolerance_km=-1)


def test_antimeridian(geocoder):
    # Fiji's Vanua Levu and Taveuni reach east of 180 degrees; Chukotka (Russia) too.
    assert geocoder.lookup(-16.9, -179.97).country_code == "FJ"
    assert geocoder.lookup(66.16, -169.81).country_code == "RU"
    # Two sea points 200 m apart on either side of the date line are the same distance off Fiji:
    # a degree-space search would look for the coast 360 degrees away from one of them.
    west, east = geocoder.lookup(-16.2, 179.999), geocoder.lookup(-16.2, -179.999)
    assert west.at_sea and east.at_sea and west.nearest_country_code == east.nearest_country_code == "FJ"
    assert west.coast_km is not None and east.coast_km is not None
    assert abs(west.coast_km - east.coast_km) < 1.0 and west.coast_km < 50


def test_poles(geocoder):
    south = [geocoder.lookup(-90.0, lon) for lon in (0.0, 123.0, -179.0)]
    assert all(p.country_code == "AQ" and p.continent == "Antarctica" and not p.at_sea for p in south)
    north = [geocoder.lookup(90.0, lon) for lon in (0.0, 123.0, -179.0)]
    # The North Pole is sea ice over ocean; the nearest land is Greenland's north coast, ~710 km.
    assert all(p.at_sea and p.nearest_country_code == "GL" and 650 < p.coast_km < 760 for p in north)


@pytest.mark.parametrize(
    ("lat", "lon", "code", "name"),
    [
        (44.94, 34.10, "UA", "Ukraine"),  # Simferopol, Crimea
        (42.66, 21.16, "XK", "Kosovo"),  # Natural Earth's ISO_A2 is "-99": ISO_A2_EH is XK
        (25.06, 121.50, "TW", "Taiwan"),  # ISO_A2 "CN-TW"
        (27.15, -13.20, "EH", "Western Sahara"),
        (35.19, 33.38, "CY", "Cyprus"),  # north Nicosia: no separate Northern Cyprus polygon
        (9.56, 44.06, "SO", "Somalia"),  # Hargeisa: no separate Somaliland polygon
        (48.8566, 2.3522, "FR", "France"),  # ISO_A2 "-99" for France and Norway
        (59.91, 10.75, "NO", "Norway"),
    ],
)
def test_german_point_of_view_edition_and_iso_code_quirks(geocoder, lat, lon, code, name):
    place = geocoder.lookup(lat, lon)
    assert (place.country_code, place.country) == (code, name)


@pytest.mark.parametrize(
    ("lat", "lon", "code", "city"),
    [
        (16.24, -61.53, "GP", "Pointe-a-Pitre"),  # in Natural Earth's France polygon
        (-20.90, 55.45, "RE", "Saint-Denis"),
        (4.93, -52.33, "GF", "Cayenne"),
        (12.15, -68.27, "BQ", "Kralendijk"),  # in the Netherlands polygon
        (78.22, 15.65, "SJ", "Longyearbyen"),  # in the Norway polygon
        (-10.42, 105.68, "CX", "Flying Fish Cove"),  # "Indian Ocean Territories", ISO_A2_EH = AU
    ],
)
def test_overseas_territories_inside_a_countrys_polygon_are_named_as_iso_codes_them(geocoder, lat, lon, code, city):
    # Not "Europe > France > Brittany > Plogoff, 6,229 km away": the town is searched in the
    # territory too, and the territory's code (what a model answering "Guadeloupe" maps to) is used.
    place = geocoder.lookup(lat, lon)
    assert (place.country_code, place.city) == (code, city) and place.city_distance_km < 10
    assert place.continent == geocoder.continent_of(code)


def test_golan_heights_gap_in_this_edition_is_syria(geocoder):
    # The German point-of-view file has a hole there; Germany sees the Golan Heights as Syrian.
    for lat, lon in [(33.0, 35.75), (32.85, 35.72), (33.2, 35.75)]:
        place = geocoder.lookup(lat, lon)
        assert place.country_code == "SY" and not place.at_sea


def test_atolls_too_small_for_the_polygons_are_land_next_to_their_town(geocoder):
    place = geocoder.lookup(6.2059, 160.7033)  # Pingelap atoll, Micronesia: no 1:10m polygon
    assert (place.country_code, place.city, place.at_sea) == ("FM", "Pingelap", False)
    assert place.coast_km > 100  # it says how far the nearest polygon is
    assert geocoder.lookup(6.2059, 160.80).at_sea  # 11 km east of the town: open sea


def test_areas_without_an_iso_code_keep_their_name_and_get_no_code(geocoder):
    place = geocoder.lookup(21.87, 33.75)  # Bir Tawil, claimed by neither Egypt nor Sudan
    assert place.country_code is None and place.country == "Bir Tawil" and not place.at_sea
    assert place.continent == "Africa" and place.city is None


def test_continent_comes_from_the_country(geocoder):
    for lat, lon in [(38.72, -9.14), (35.68, 139.65), (-33.87, 151.21), (-22.91, -43.17), (9.56, 44.06)]:
        place = geocoder.lookup(lat, lon)
        assert place.continent == geocoder.continent_of(place.country_code)


def test_sea_places_round_trip_through_the_stage_records(geocoder):
    place = geocoder.lookup(30.0, -40.0)
    candidate = Candidate(lat=30.0, lon=-40.0, source="vlm", place=place)
    again = Candidate.model_validate_json(candidate.model_dump_json())
    assert again.place == place and again.place.hierarchy() == place.hierarchy()
