"""Reference data files that ship inside registry packages (boundaries, towns): found, never downloaded."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path


def packaged_file(package: str, filename: str, *, what: str) -> Path:
    """``filename`` inside the installed ``package``; FileNotFoundError naming ``what`` needs it and how to
    install it when the package or the file is missing."""
    distribution = package.replace("_", "-")
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{what} need the {distribution} package (pip install {distribution}, or run scripts/install.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {distribution}")
    return path
