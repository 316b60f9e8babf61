"""Evaluation: benchmark loaders, metrics, evaluation runs and reports.

Owns reading ground truth (IM2GPS3K, YFCC4K and plain tables, with the swapped LAT/LON header check),
reading predictions, the metrics with their bootstrap intervals (every number's meaning is in
``metrics``), running the pipeline over a benchmark (``run``; its folder ``run_folder``, the
degraded-run check ``degraded``, what ran ``provenance``), and the reports and comparisons. May import the
shared core of ``geosleuth``, ``geosleuth.api`` and the runners of ``geosleuth.agent`` (to run the same
pipeline users run); nothing in ``agent``, ``index`` or ``prompts`` may import it. Metrics score
predictions as written: a failure is a miss, never a coordinate.
"""
