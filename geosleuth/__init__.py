"""geosleuth: where on Earth was this photo taken, why, and what if you ask again.

The public API lives in :mod:`geosleuth.api` (``Geolocator``); the data objects shared by every
stage live in :mod:`geosleuth.types`. Importing this package has no side effects: models load when
first used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geosleuth")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
