"""``geosleuth locate``: one readable answer (or one JSON Prediction) per photo."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from geosleuth.cli import common
from geosleuth.cli.common import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL_FAILURE,
    err_console,
    user_errors,
    warn_if_tools_fell_back,
)
from geosleuth.cli.display import exif_gps_of, failed_prediction, print_prediction
from geosleuth.errors import GeosleuthError

if TYPE_CHECKING:
    from geosleuth.api import Geolocator
    from geosleuth.types import Prediction, Trace


def fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors about the setup, not about one image: they stop a run instead of being recorded."""
    from geosleuth.agent.batch import DEFAULT_FATAL_ERRORS
    from geosleuth.errors import StageUnavailableError
    from geosleuth.vlm.backends import VLMUnavailableError

    return (*DEFAULT_FATAL_ERRORS, VLMUnavailableError, StageUnavailableError)


async def _locate_streaming(geo: Geolocator, path: str, top_k: int | None, err: Console) -> tuple[Prediction, Trace]:
    """Run one image through ``astream``, showing the step in progress (and the VLM's tokens) on stderr."""
    from geosleuth.cli.progress import LocateProgress

    prediction: Prediction | None = None
    trace: Trace | None = None
    with LocateProgress(err, f"locating {path}") as progress:
        async for step, update in geo.astream(path, top_k=top_k, progress=True):
            if step == "done":
                prediction, trace = update["prediction"], update["trace"]
                break
            progress.feed(step, update)
    if prediction is None or trace is None:
        raise RuntimeError(f"the locate stream for {path} ended without a prediction")
    return prediction, trace


def locate(
    ctx: typer.Context,
    images: list[Path] = typer.Argument(..., help="image files", exists=True, dir_okay=False, readable=True),
    top_k: int | None = typer.Option(
        None, "--top-k", "-k", min=1, help="alternatives to report (default: verify.top_k)"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print one Prediction JSON object per line instead of a summary"
    ),
    trace_file: Path | None = typer.Option(
        None, "--trace", help="write the full trace (JSON; a JSONL of traces for several images)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no step progress on stderr"),
    allow_degraded: bool = typer.Option(
        False, "--allow-degraded", help="exit 0 for answers that lack a required stage (e.g. the VLM)"
    ),
) -> None:
    """Where was this photo taken? Prints the place, coordinate, confidence, alternatives and clues.

    EXIF GPS in the file, if any, is shown beside the prediction (never used to make it). A VLM
    server is sent one test request first (preflight). Exits 1 when any image got no location, 3
    when an answer is degraded (unless --allow-degraded), 4 when the VLM server does not answer.
    """
    err = err_console()
    out = Console()
    if quiet:
        err = Console(stderr=True, quiet=True)
    fatal = fatal_errors()
    results: list[tuple[str, Prediction, Trace | None]] = []

    async def run(geo: Geolocator) -> None:
        try:
            await geo.acheck_ready()
            warn_if_tools_fell_back(geo, err)
            for image in images:
                path = str(image)
                try:
                    prediction, trace = await _locate_streaming(geo, path, top_k, err)
                except fatal:
                    raise
                except GeosleuthError as exc:  # this image could not be processed; the others still are
                    prediction, trace = failed_prediction(path, exc), None
                results.append((path, prediction, trace))
                _show(path, prediction)
        finally:
            await geo.aclose()

    def _show(path: str, prediction: Prediction) -> None:
        if as_json:
            typer.echo(prediction.model_dump_json())
        else:
            print_prediction(out, prediction, path, exif_gps=exif_gps_of(prediction, path))

    with user_errors():
        geo = common.open_geolocator(ctx)
        try:
            asyncio.run(run(geo))
        except KeyboardInterrupt:
            err_console().print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            if trace_file is not None:
                _write_traces(trace_file, [t for _, _, t in results if t is not None], several=len(images) > 1)
    if any(not p.ok for _, p, _ in results):
        raise typer.Exit(EXIT_PARTIAL_FAILURE)
    if not allow_degraded and any(p.degraded for _, p, _ in results):
        err_console().print("[yellow]degraded answer(s): exit 3; --allow-degraded accepts them[/]")
        raise typer.Exit(EXIT_DEGRADED)


def _write_traces(trace_file: Path, traces: list[Trace], *, several: bool) -> None:
    if not traces:
        return
    from geosleuth.fileio import atomic_write_text

    text = ("".join(t.model_dump_json() + "\n" for t in traces) if several
            else traces[0].model_dump_json(indent=2) + "\n")
    atomic_write_text(trace_file, text)
    err_console().print(f"trace written to {trace_file}", highlight=False, markup=False)
