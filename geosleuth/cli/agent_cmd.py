"""Top-level commands that run the agent: ``locate``, ``batch``, ``export``, ``chat``.

Heavy libraries (torch, transformers, langgraph) load inside the command functions, through
:mod:`geosleuth.api`, so ``geosleuth --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from geosleuth.cli.common import EXIT_PARTIAL_FAILURE, EXIT_USAGE, err_console, state, user_errors
from geosleuth.errors import GeosleuthError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from geosleuth.agent.batch import BatchItem, BatchResult, BatchSummary
    from geosleuth.api import Geolocator
    from geosleuth.types import Coordinate, Prediction, Trace

EXIT_INTERRUPTED = 130
MAX_SHOWN_CLUES = 5


class EngineChoice(str, Enum):
    local = "local"
    ray = "ray"


class ExportChoice(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    geojson = "geojson"
    kml = "kml"


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _fatal_errors() -> tuple[type[BaseException], ...]:
    """Errors about the setup, not about one image: they stop a run instead of being recorded."""
    from geosleuth.agent.batch import DEFAULT_FATAL_ERRORS
    from geosleuth.vlm.backends import VLMUnavailableError

    return (*DEFAULT_FATAL_ERRORS, VLMUnavailableError)


def _failed_prediction(path: str, exc: BaseException) -> Prediction:
    """An explicit failure (no coordinate) for an image that could not be processed."""
    from geosleuth.types import ImageRef, Prediction, StepFailure

    reason = str(exc) or type(exc).__name__
    return Prediction(
        image=ImageRef(path=path), failure_reason=reason, failures=[StepFailure(step="perceive", error=reason)]
    )


def _exif_gps(prediction: Prediction, path: str) -> Coordinate | None:
    """The file's EXIF GPS, from the prediction's image record or read from the file."""
    exif = prediction.image.exif
    if exif is not None:
        return exif.gps
    from geosleuth.imageio import read_exif

    try:
        return read_exif(path).gps
    except GeosleuthError:
        return None


def _coord(lat: float, lon: float) -> str:
    return f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.4f}°{'E' if lon >= 0 else 'W'}"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def print_prediction(
    console: Console, prediction: Prediction, path: str, *, exif_gps: Coordinate | None = None
) -> None:
    """A readable summary: place, coordinate, confidence, map link, EXIF GPS, alternatives, clues, failures.

    Model text (clues, places) is rendered as plain text, never as rich markup.
    """
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    from geosleuth.agent.trace_view import osm_link
    from geosleuth.geo import geodesic_km

    parts: list[RenderableType] = [Rule(Text(path), align="left", style="green" if prediction.ok else "red")]
    if prediction.ok:
        assert prediction.lat is not None and prediction.lon is not None
        place = prediction.place.hierarchy() if prediction.place else "unknown place"
        parts.append(Text(place, style="bold"))
        line = Text.assemble((_coord(prediction.lat, prediction.lon), "cyan"))
        if prediction.confidence is not None:
            line.append(f"   confidence {prediction.confidence:.2f}")
        parts.append(line)
        url = osm_link(prediction.lat, prediction.lon)
        parts.append(Text.assemble(("map ", "dim"), (url, f"link {url}")))
    else:
        parts.append(Text.assemble(("no location: ", "bold red"), prediction.failure_reason or "unknown reason"))
    if exif_gps is not None:
        line = Text.assemble(("EXIF GPS ", "bold"), _coord(exif_gps.lat, exif_gps.lon))
        if prediction.ok:
            km = float(geodesic_km(prediction.lat, prediction.lon, exif_gps.lat, exif_gps.lon))
            line.append(f"   {km:,.1f} km from the prediction")
        parts.append(line)
    if prediction.alternatives:
        table = Table(title="alternatives", title_justify="left", box=None, pad_edge=False, header_style="bold")
        for column in ("#", "coordinate", "place", "source", "score", "conf."):
            table.add_column(column, justify="right" if column in ("#", "score", "conf.") else "left")
        for rank, c in enumerate(prediction.alternatives, start=1):
            table.add_row(str(rank), _coord(c.lat, c.lon), Text(c.place.hierarchy() if c.place else ""),
                          c.source.value, f"{c.score:.3f}", f"{c.confidence:.2f}")
        parts.append(table)
    if prediction.clues:
        parts.append(Text("main clues", style="bold"))
        for clue in prediction.clues[:MAX_SHOWN_CLUES]:
            parts.append(Text.assemble("  • ", clue.observation, (" → ", "dim"), (clue.implication, "italic")))
    for failure in prediction.failures:
        if failure.error != prediction.failure_reason:  # already shown above
            parts.append(Text.assemble((f"{failure.step} failed: ", "yellow"), failure.error))
    for part in parts:
        # soft_wrap for the link line: a URL folded or cropped by rich cannot be clicked or copied.
        console.print(part, soft_wrap=isinstance(part, Text) and part.plain.startswith("map https://"))


def _open_geolocator(ctx: typer.Context) -> Geolocator:
    from geosleuth.api import Geolocator

    return Geolocator.from_config(state(ctx).config())


# ---------------------------------------------------------------------------------------------
# locate


async def _locate_streaming(geo: Geolocator, path: str, top_k: int | None, err: Console) -> tuple[Prediction, Trace]:
    """Run one image through ``astream``, printing each finished step on stderr."""
    prediction: Prediction | None = None
    trace: Trace | None = None
    from rich.text import Text

    with err.status(Text(f"locating {path} ...")) as status:
        async for step, update in geo.astream(path, top_k=top_k):
            if step == "done":
                prediction, trace = update["prediction"], update["trace"]
                break
            event = update.get("event")
            took = f" {event.duration_s:.2f} s" if event is not None else ""
            failed = event is not None and event.error
            err.print(f"  [dim]{step}[/]{took}" + ("  [yellow](failed, continuing)[/]" if failed else ""),
                      highlight=False)
            status.update(Text(f"locating {path} ... {step} done"))
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
) -> None:
    """Where was this photo taken? Prints the place, coordinate, confidence, alternatives and clues.

    EXIF GPS in the file, if any, is shown beside the prediction (never used to make it). Exits 1
    when any image got no location.
    """
    err = err_console()
    out = Console()
    if quiet:
        err = Console(stderr=True, quiet=True)
    fatal = _fatal_errors()
    results: list[tuple[str, Prediction, Trace | None]] = []

    async def run(geo: Geolocator) -> None:
        try:
            for image in images:
                path = str(image)
                try:
                    prediction, trace = await _locate_streaming(geo, path, top_k, err)
                except fatal:
                    raise
                except GeosleuthError as exc:  # this image could not be processed; the others still are
                    prediction, trace = _failed_prediction(path, exc), None
                results.append((path, prediction, trace))
                _show(path, prediction)
        finally:
            await geo.aclose()

    def _show(path: str, prediction: Prediction) -> None:
        if as_json:
            typer.echo(prediction.model_dump_json())
        else:
            print_prediction(out, prediction, path, exif_gps=_exif_gps(prediction, path))

    with user_errors():
        geo = _open_geolocator(ctx)
        try:
            asyncio.run(run(geo))
        except KeyboardInterrupt:
            err_console().print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            if trace_file is not None:
                traces = [t for _, _, t in results if t is not None]
                if traces:
                    text = (traces[0].model_dump_json(indent=2) + "\n" if len(images) == 1
                            else "".join(t.model_dump_json() + "\n" for t in traces))
                    _atomic_write(trace_file, text)
                    err_console().print(f"trace written to {trace_file}", highlight=False, markup=False)
    if any(not p.ok for _, p, _ in results):
        raise typer.Exit(EXIT_PARTIAL_FAILURE)


# ---------------------------------------------------------------------------------------------
# batch


def _trace_file_name(image_id: str) -> str:
    """``sub/a.jpg`` -> ``sub_a.jpg.json``; a hash is added when the id had to be changed, so two
    ids never share a file."""
    import hashlib
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._") or "image"
    if safe != image_id:
        safe = f"{safe[:100]}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"
    return f"{safe}.json"


def _batch_progress(err: Console) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
    )


def _summary_table(summary: BatchSummary, exports: Sequence[str]) -> RenderableType:
    from rich.table import Table

    table = Table(title="batch summary", title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images in input", str(summary.total))
    if summary.previously_done:
        table.add_row("already done (skipped)", f"{summary.previously_done}"
                      + (f", {summary.previous_failed} of them without a location" if summary.previous_failed else ""))
    table.add_row("located this run", str(summary.ok))
    if summary.no_coordinate:
        table.add_row("no location (see failure_reason)", f"[red]{summary.no_coordinate}[/]")
    if summary.errors:
        kinds = ", ".join(f"{name} {count}" for name, count in summary.error_types.most_common())
        table.add_row("errors", f"[red]{summary.errors}[/] ({kinds})")
    if summary.step_failures:
        steps = ", ".join(f"{step}: {count}" for step, count in summary.step_failures.most_common())
        table.add_row("images with a failed step", f"[yellow]{steps}[/] (see each prediction's failures)")
    if summary.remaining:
        table.add_row("not done", f"[yellow]{summary.remaining}[/] (re-run with --resume)")
    table.add_row("time", f"{summary.elapsed_s:.1f} s, {summary.images_per_s:.2f} images/s")
    if summary.truncated_partial_line:
        table.add_row("repaired", "a half-written last line (from a killed run) was removed and redone")
    if summary.dropped_error_lines:
        table.add_row("retried", f"{summary.dropped_error_lines} image(s) that had failed before")
    table.add_row("results", str(summary.out_path))
    for line in exports:
        table.add_row("export", line)
    return table


def batch(
    ctx: typer.Context,
    source: Path = typer.Argument(
        ..., metavar="INPUT", help="a folder (searched recursively), a CSV with a path column, or a list file",
        exists=True,
    ),
    out: Path = typer.Option(..., "--out", "-o", help="results JSONL (one line per image, written as each finishes)"),
    resume: bool = typer.Option(False, "--resume", help="continue: skip images already in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="discard an existing --out and start again"),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="with --resume: run images that errored again"),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-j", min=1,
        help="images in flight at once (default: 2 x vlm.concurrency, so the VLM server's batch stays full "
        "while some images are in CPU stages; VLM requests in flight stay capped at vlm.concurrency)",
    ),
    formats: list[ExportChoice] = typer.Option(
        [], "--format", "-f", help="also export the results as csv / geojson / kml next to --out (repeatable)"
    ),
    trace_dir: Path | None = typer.Option(None, "--trace-dir", help="write one trace JSON per image here"),
    top_k: int | None = typer.Option(None, "--top-k", "-k", min=1, help="alternatives per image"),
    engine: EngineChoice = typer.Option(
        EngineChoice.local, "--engine", help="local: this process; ray: a Ray Data pipeline (docs/ray.md)"
    ),
    address: str | None = typer.Option(
        None, "--address", help="with --engine ray: the Ray cluster (HOST:PORT or auto; default: a local Ray)"
    ),
) -> None:
    """Locate many images; results go to a JSONL file line by line, so a stopped run can --resume.

    Export an existing results file later with `geosleuth export RESULTS --format geojson`.
    Exits 1 when any image has no location, 130 when interrupted.
    """
    from geosleuth.agent.exports import EXPORT_SUFFIXES

    if out.suffix.lower() in {s for f, s in EXPORT_SUFFIXES.items() if f != "jsonl"}:
        err_console().print(
            f"[bold red]error:[/] --out {out} is the JSONL results file (needed for --resume); "
            f"use --format {out.suffix.lstrip('.').lower()} to also write that format",
            highlight=False,
        )
        raise typer.Exit(EXIT_USAGE)
    if retry_errors and not resume:
        err_console().print("[bold red]error:[/] --retry-errors needs --resume", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if address is not None and engine is not EngineChoice.ray:
        err_console().print("[bold red]error:[/] --address needs --engine ray", highlight=False)
        raise typer.Exit(EXIT_USAGE)

    err = err_console()
    with user_errors():
        from rich.text import Text

        from geosleuth.agent.batch import (
            BatchAborted,
            BatchInterrupted,
            BatchSummary,
            arun_batch,
            read_batch_input,
        )
        from geosleuth.errors import DataFileError

        config = state(ctx).config()
        if out.is_file() and out.stat().st_size > 0 and not (resume or overwrite):
            # Checked here too (the runner checks again under its lock): before minutes of model loading.
            raise DataFileError(
                f"{out} already has results; use --resume to continue that run (done images are skipped) "
                "or --overwrite to start again"
            )
        batch_input = read_batch_input(source)
        if batch_input.ignored_files:
            err.print(f"{batch_input.ignored_files} non-image file(s) in {source} ignored", highlight=False,
                      markup=False)
        geo = _open_geolocator(ctx) if engine is EngineChoice.local else None
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)

        async def locate_one(item: BatchItem) -> Prediction:
            assert geo is not None
            if trace_dir is None:
                return await geo.alocate(item.path, top_k=top_k)
            prediction, trace = await geo.alocate_with_trace(item.path, top_k=top_k)
            await asyncio.to_thread(_atomic_write, trace_dir / _trace_file_name(item.id), trace.model_dump_json())
            return prediction

        progress = _batch_progress(err)
        task_ids: list[Any] = []

        def on_start(summary: BatchSummary) -> None:
            if summary.truncated_partial_line:
                err.print("[yellow]removed a half-written last line from a killed run; that image runs again[/]")
            if summary.previously_done:
                err.print(f"resuming: {summary.previously_done} of {summary.total} images already done",
                          highlight=False)
            todo = summary.total - summary.previously_done
            task_ids.append(progress.add_task("locating", total=todo, rate="", counts=""))

        def on_result(result: BatchResult) -> None:
            s = run_summary
            elapsed = progress.tasks[0].elapsed or 0.0
            done = s.done_this_run
            progress.update(
                task_ids[0], advance=1,
                rate=f"{done / elapsed:.2f} img/s" if elapsed > 0 else "",
                counts=f"[green]{s.ok} ok[/]" + (f" [red]{s.no_coordinate + s.errors} failed[/]"
                                                  if s.no_coordinate + s.errors else ""),
            )
            if result.prediction is None:  # ids and messages are shown as text, never as markup
                progress.console.print(Text.assemble(("error ", "red"), f"{result.item.id}: {result.error}"))

        run_summary = BatchSummary(out)

        async def run() -> BatchSummary:
            assert geo is not None
            try:
                return await arun_batch(
                    batch_input.items, locate_one, out, resume=resume, overwrite=overwrite,
                    retry_errors=retry_errors, concurrency=concurrency or 2 * config.vlm.concurrency,
                    on_start=on_start, on_result=on_result, fatal_errors=_fatal_errors(), summary=run_summary,
                )
            finally:
                await geo.aclose()

        def run_on_ray() -> BatchSummary:
            from geosleuth.agent.batch_ray import RayBatchOptions, run_ray_batch

            def on_trace(item: BatchItem, trace_json: str) -> None:
                assert trace_dir is not None
                _atomic_write(trace_dir / _trace_file_name(item.id), trace_json)

            return run_ray_batch(
                batch_input.items, config, out, resume=resume, overwrite=overwrite, retry_errors=retry_errors,
                top_k=top_k,
                options=RayBatchOptions(address=address, concurrency=concurrency or 2 * config.vlm.concurrency),
                on_start=on_start, on_result=on_result, on_trace=on_trace if trace_dir is not None else None,
                fatal_errors=_fatal_errors(), summary=run_summary,
            )

        if geo is not None:
            # Load the models before the clock starts (and fail on a bad setup before any image runs).
            with err.status("loading models ..."):
                _ = geo.resources
        stopped: str | None = None
        exit_code = 0
        with progress:
            try:
                if geo is None:
                    run_on_ray()
                else:
                    asyncio.run(run())
            except KeyboardInterrupt:
                run_summary.interrupted = True
                stopped, exit_code = "interrupted: finished images are in the results file; re-run with --resume", \
                    EXIT_INTERRUPTED
            except (BatchAborted, BatchInterrupted) as exc:
                stopped, exit_code = str(exc), EXIT_USAGE if isinstance(exc, BatchAborted) else EXIT_INTERRUPTED

        exports: list[str] = []
        if stopped is None:
            exports = _export_after_run(out, formats)
        Console().print(_summary_table(run_summary, exports))
        if stopped is not None:
            err.print(Text.assemble(("stopped: ", "bold red"), stopped))
            raise typer.Exit(exit_code)
    if run_summary.failed:
        raise typer.Exit(EXIT_PARTIAL_FAILURE)


def _export_after_run(out: Path, formats: Sequence[ExportChoice]) -> list[str]:
    from geosleuth.agent.exports import export_results

    lines = []
    for fmt in dict.fromkeys(formats):
        if fmt is ExportChoice.jsonl:
            lines.append(f"jsonl: {out} (the results file is JSONL already)")
            continue
        report = export_results(out, fmt.value)
        skipped = f", {report.without_coordinate} without a location left out" if (
            report.without_coordinate and fmt in (ExportChoice.geojson, ExportChoice.kml)) else ""
        lines.append(f"{fmt.value}: {report.path} ({report.written} images{skipped})")
    return lines


# ---------------------------------------------------------------------------------------------
# export


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
    note = ""
    if report.without_coordinate:
        note = (f"; {report.without_coordinate} image(s) without a location left out"
                if fmt in (ExportChoice.geojson, ExportChoice.kml)
                else f"; {report.without_coordinate} of them without a location")
    err_console().print(f"wrote {report.written} image(s) to {report.path}{note}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------
# chat


CHAT_HELP = (
    "Ask about the photo (\"why not Spain?\"), or give a hint (\"it is in South America\", \"within 50 km "
    "of Porto\", \"clear hints\"). Commands: /where (the current answer), /hints, /trace FILE, /help, /quit."
)


def chat(
    ctx: typer.Context,
    image: Path | None = typer.Argument(
        None, help="the photo to talk about (not needed with --resume)", exists=True, dir_okay=False, readable=True
    ),
    resume_id: str | None = typer.Option(None, "--resume", help="continue an earlier session by its id"),
) -> None:
    """Locate a photo, then ask follow-up questions or give hints that re-run the verification.

    Reads one message per line from stdin (piped input works); /quit or end of input ends the chat.
    Sessions are saved: the session id printed at the start and the end resumes it with --resume.
    """
    if image is None and resume_id is None:
        err_console().print("[bold red]error:[/] give an IMAGE, or --resume SESSION to continue a session")
        raise typer.Exit(EXIT_USAGE)
    with user_errors():
        geo = _open_geolocator(ctx)
        loop = asyncio.new_event_loop()
        try:
            _chat_loop(loop, geo, image, resume_id)
        except KeyboardInterrupt:
            err_console().print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            loop.run_until_complete(geo.aclose())
            loop.close()


def _read_message(console: Console) -> str | None:
    """One line from stdin (None at end of input). Reading happens on the main thread, between
    turns, so Ctrl-C is never stuck behind a blocked reader."""
    import sys

    from rich.text import Text

    if sys.stdin.isatty():
        try:
            return console.input("[bold]you>[/] ")
        except EOFError:
            return None
    line = sys.stdin.readline()
    if not line:
        return None
    message = line.rstrip("\n")
    # Echo piped input so the transcript reads as a dialogue.
    console.print(Text.assemble(("you> ", "bold"), message))
    return message


def _chat_loop(loop: asyncio.AbstractEventLoop, geo: Geolocator, image: Path | None, resume_id: str | None) -> None:
    from rich.text import Text

    from geosleuth.geo import haversine_km

    out, err = Console(), err_console()
    session = loop.run_until_complete(geo.open_chat(image, session_id=resume_id))
    try:
        out.print(Text.assemble(("session ", "dim"), (session.session_id, "bold cyan"),
                                (f"  (resume later: geosleuth chat --resume {session.session_id})", "dim")))
        with err.status(Text(f"locating {session.image_path} ...")):
            reply = loop.run_until_complete(session.start())
        current = reply.prediction
        if reply.kind == "resumed":
            turns = len(loop.run_until_complete(session.history()))
            out.print(f"resumed session {session.session_id} ({turns} earlier turns) about {session.image_path}",
                      markup=False,
                      highlight=False)
            _show_constraints(out, reply.constraints)
        if current is not None:
            print_prediction(out, current, session.image_path, exif_gps=_exif_gps(current, session.image_path))
        else:
            out.print(Text(reply.text))
        out.print(Text(CHAT_HELP, style="dim"))
        while True:
            message = _read_message(out)
            if message is None:
                break
            command = message.strip()
            if not command:
                continue
            if command in ("/quit", "/exit", "/q"):
                break
            if command == "/help":
                out.print(Text(CHAT_HELP))
                continue
            if command == "/where":
                if current is not None:
                    print_prediction(out, current, session.image_path)
                continue
            if command == "/hints":
                _show_constraints(out, tuple(loop.run_until_complete(session.constraints())), empty="no hints")
                continue
            if command.startswith("/trace"):
                target = command[len("/trace"):].strip()
                trace = loop.run_until_complete(session.trace())
                if not target or trace is None:
                    out.print("usage: /trace FILE (writes the latest answer's trace as JSON)", style="yellow")
                    continue
                _atomic_write(Path(target).expanduser(), trace.model_dump_json(indent=2) + "\n")
                out.print(f"trace written to {target}; view it with `geosleuth trace show {target}`", highlight=False,
                          markup=False)
                continue
            if command.startswith("/"):
                out.print(f"unknown command {command.split()[0]!r}; /help lists them", style="yellow", highlight=False,
                          markup=False)
                continue
            with err.status("thinking ..."):
                try:
                    reply = loop.run_until_complete(session.ask(message))
                except GeosleuthError as exc:
                    # One failed turn (e.g. the VLM server went away) does not end the conversation.
                    out.print(Text.assemble(("error: ", "bold red"), str(exc)))
                    continue
            if reply.kind == "relocated" and reply.prediction is not None:
                _show_constraints(out, reply.constraints, empty="no hints (cleared)")
                new = reply.prediction
                if current is not None and current.ok and new.ok:
                    moved = float(haversine_km(current.lat, current.lon, new.lat, new.lon))
                    out.print(f"moved {moved:,.0f} km from the previous answer", style="dim", highlight=False)
                print_prediction(out, new, session.image_path, exif_gps=_exif_gps(new, session.image_path))
                current = new
            elif reply.kind in ("not-understood", "no-vlm"):
                out.print(Text(reply.text, style="yellow"))
            else:
                out.print(Text.assemble(("geosleuth> ", "bold green"), reply.text))
    finally:
        loop.run_until_complete(session.aclose())
        out.print(Text.assemble(("session ", "dim"), (session.session_id, "bold cyan"), " saved; resume with ",
                                (f"geosleuth chat --resume {session.session_id}", "bold")))


def _show_constraints(out: Console, constraints: Sequence[Any], *, empty: str | None = None) -> None:
    if constraints:
        out.print("hints: " + "; ".join(c.label for c in constraints), style="magenta", highlight=False)
    elif empty:
        out.print(empty, style="magenta")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("locate")(locate)
    app.command("batch")(batch)
    app.command("export")(export)
    app.command("chat")(chat)

