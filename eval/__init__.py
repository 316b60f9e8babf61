"""Evaluation: benchmark loaders, metrics, runs and reports."""
