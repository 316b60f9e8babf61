"""Geography shared by every stage: coordinates, distances, reverse geocoding, names, basemaps.

- ``coordinates.py``: validation and longitude wrapping; ``distance.py``: geodesic / haversine
  distances, GeoScore, unit vectors on the sphere;
- ``boundaries.py``: Natural Earth 1:10m country polygons (German point-of-view edition) and
  point-in-polygon; ``cities.py``: nearest GeoNames town on the sphere;
- ``geocoder.py``: :class:`ReverseGeocoder`, coordinate -> :class:`Place` (``place.py``);
- ``names.py``: place-name folding (the one implementation), country codes, names, continents;
- ``basemap.py``: land and borders from the same polygons for every map (GeoJSON, SVG, matplotlib).

This package imports no other geosleuth module but ``geosleuth.errors`` (``geosleuth.types`` builds
on it), and does no work at import: data loads inside the objects that need it.
"""

from .coordinates import normalize_lon, validate_coordinate, validate_coordinates
from .distance import EARTH_MEAN_RADIUS_KM, GEOSCORE_SCALE_KM, geodesic_km, geoscore, haversine_km
from .geocoder import ReverseGeocoder
from .names import CONTINENT_NAMES, CountryInfo, fold_name
from .place import Place

__all__ = [
    "CONTINENT_NAMES",
    "EARTH_MEAN_RADIUS_KM",
    "GEOSCORE_SCALE_KM",
    "CountryInfo",
    "Place",
    "ReverseGeocoder",
    "fold_name",
    "geodesic_km",
    "geoscore",
    "haversine_km",
    "normalize_lon",
    "validate_coordinate",
    "validate_coordinates",
]
