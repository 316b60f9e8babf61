"""Tiny random models and synthetic data, built locally, for tests and benchmarks (no downloads).

Development scaffolding, not part of the product: it is importable as ``geosleuth.testing`` from a
development (editable) install (``scripts/install.sh``) but is not shipped in the wheel
(``pyproject.toml`` leaves it out), so nothing outside ``tests/`` and ``bench/`` may import it.
"""
