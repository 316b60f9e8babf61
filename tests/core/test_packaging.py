"""Everything installs under the one `geosleuth` namespace; no stray top-level modules."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# Test and benchmark scaffolding: importable in a development install, never shipped in the wheel.
DEV_ONLY_PACKAGES = {"geosleuth.testing"}


def test_every_source_package_is_listed_in_pyproject():
    setup = _pyproject()["tool"]["setuptools"]
    listed = set(setup["packages"])
    mapping = setup["package-dir"]
    found = set()
    for import_name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([import_name, *rel.parts]) if rel.parts else import_name)
    shipped = found - DEV_ONLY_PACKAGES
    assert found >= DEV_ONLY_PACKAGES, "a dev-only package folder is gone: update DEV_ONLY_PACKAGES"
    assert shipped <= listed, f"add to [tool.setuptools] packages: {sorted(shipped - listed)}"
    assert listed <= shipped, f"not a shipped package folder, remove from packages: {sorted(listed - shipped)}"


def test_test_scaffolding_stays_out_of_the_wheel_but_imports_in_a_dev_install():
    setup = _pyproject()["tool"]["setuptools"]
    # Left out of packages, and of package data too (a stale egg-info would otherwise carry the files in).
    assert "geosleuth.testing" not in setup["packages"]
    assert "testing/*" in setup["exclude-package-data"]["geosleuth"]
    testing = importlib.import_module("geosleuth.testing.tiny_clip")
    assert Path(testing.__file__).resolve().parent == ROOT / "geosleuth" / "testing"
    product_code = [p for folder in setup["package-dir"].values() for p in (ROOT / folder).rglob("*.py")]
    importers = [
        str(p.relative_to(ROOT)) for p in product_code
        if "testing" not in p.relative_to(ROOT).parts and "geosleuth.testing" in p.read_text(encoding="utf-8")
    ]
    assert not importers, f"shipped modules import the dev-only geosleuth.testing: {importers}"


def test_stage_folders_import_under_geosleuth():
    for name in ("geosleuth.agent", "geosleuth.index", "geosleuth.eval", "geosleuth.prompts"):
        module = importlib.import_module(name)
        assert Path(module.__file__).parent.name == name.split(".")[1]


def test_no_top_level_agent_index_or_eval_modules_are_installed():
    for name in ("agent", "index", "eval", "prompts"):
        spec = importlib.util.find_spec(name) if name not in sys.modules else None
        if spec is not None and spec.origin:
            # Only acceptable if it is the source folder itself being on sys.path (never installed).
            assert "site-packages" not in spec.origin, f"top-level {name!r} installed at {spec.origin}"


def test_prompt_templates_ship_as_package_data():
    data = _pyproject()["tool"]["setuptools"]["package-data"]["geosleuth.prompts"]
    assert any(pattern.startswith("templates/") for pattern in data)


def test_the_default_calibration_ships_as_package_data():
    data = _pyproject()["tool"]["setuptools"]["package-data"]["geosleuth.agent"]
    assert "calibration_default.json" in data
    from geosleuth.agent.confidence import load_calibration

    shipped = load_calibration(None)
    assert "simulation" in shipped.source.lower() or "not fitted" in shipped.source.lower()  # says where it comes from
