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
    assert found == listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


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
