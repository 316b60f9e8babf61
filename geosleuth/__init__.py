"""geosleuth: where on Earth was this photo taken, why, and what if you ask again.

The public API lives in :mod:`geosleuth.api` (``Geolocator``); the data objects shared by every
stage live in :mod:`geosleuth.types`. Importing this package has no side effects: models load when
first used.

This folder owns the shared core and the interfaces. The core (``types``, ``geo``, ``config``,
``errors``, ``imageio``, ``models``, ``vlm/``) may import the core, ``geosleuth.prompts`` (a leaf) and
third-party libraries, never ``geosleuth.agent``, ``.index`` or ``.eval``, so every other folder can
build on it. The interfaces (``cli/``, ``api.py``) sit on top and may import any folder.
``testing/`` holds tiny local models and synthetic data for tests and benchmarks: it is importable in
a development (editable) install but not shipped in the wheel, so product code never imports it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geosleuth")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
