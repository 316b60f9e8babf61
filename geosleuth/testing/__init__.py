"""Tiny random models and synthetic data, built locally, for tests and benchmarks (no downloads)."""
