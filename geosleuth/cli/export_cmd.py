"""``geosleuth export``: a batch results file as CSV, GeoJSON, KML or clean JSONL."""

from __future__ import annotations

from pathlib import Path

import typer

from geosleuth.cli.batch_cmd import ExportChoice
from geosleuth.cli.common import err_console, user_errors


def export(
    results: Path = typer.Argument(..., help="a results JSONL from `geosleuth batch`", exists=True, dir_okay=False),
    fmt: ExportChoice = typer.Option(..., "--format", "-f", help="jsonl | csv | geojson | kml"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output file (default: RESULTS with the format's suffix)"
    ),
) -> None:
    """Export batch results as CSV, GeoJSON (points, longitude first), KML, or clean JSONL."""
    with user_errors():
        from geosleuth.agent.exports import export_results

        report = export_results(results, fmt.value, out)
    note = f"; {report.degraded} of them degraded (see their status)" if report.degraded else ""
    if report.without_coordinate:
        note += (f"; {report.without_coordinate} image(s) without a location left out"
                if fmt in (ExportChoice.geojson, ExportChoice.kml)
                else f"; {report.without_coordinate} of them without a location")
    err_console().print(f"wrote {report.written} image(s) to {report.path}{note}", highlight=False, markup=False)
