"""``geosleuth batch``: many photos, one durable JSON line each, resumable, stopped by the circuit
breaker when a required stage goes down."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from geosleuth.cli import common
from geosleuth.cli.common import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL_FAILURE,
    EXIT_STAGE_UNAVAILABLE,
    EXIT_USAGE,
    EngineChoice,
    err_console,
    state,
    user_errors,
    warn_if_tools_fell_back,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from geosleuth.agent.batch import BatchItem, BatchResult, BatchSummary
    from geosleuth.types import Prediction


class ExportChoice(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    geojson = "geojson"
    kml = "kml"


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


def _progress_counts(s: BatchSummary) -> str:
    failed = s.no_coordinate + s.errors
    return (f"[green]{s.ok} ok[/]" + (f" [yellow]{s.degraded} degraded[/]" if s.degraded else "")
            + (f" [red]{failed} failed[/]" if failed else ""))


def summary_table(summary: BatchSummary, exports: Sequence[str]) -> RenderableType:
    """The batch summary: every status counted, this run and lines already in the file."""
    from rich.table import Table

    table = Table(title="batch summary", title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images in input", str(summary.total))
    if summary.previously_done:
        before = ", ".join(f"{status} {summary.previous[status]}" for status in ("ok", "degraded", "failed", "error")
                           if summary.previous[status])
        table.add_row("already done (skipped)", f"{summary.previously_done} ({before})")
    table.add_row("located this run", str(summary.ok))
    if summary.degraded:
        stages = ", ".join(f"{stage} {count}" for stage, count in summary.missing_stages.most_common())
        table.add_row("degraded this run", f"[yellow]{summary.degraded}[/] (missing: {stages})")
    if summary.no_coordinate:
        table.add_row("no location (see failure_reason)", f"[red]{summary.no_coordinate}[/]")
    if summary.errors:
        kinds = ", ".join(f"{name} {count}" for name, count in summary.error_types.most_common())
        table.add_row("errors", f"[red]{summary.errors}[/] ({kinds})")
    if summary.step_failures:
        steps = ", ".join(f"{step}: {count}" for step, count in summary.step_failures.most_common())
        table.add_row("images with a failed step", f"[yellow]{steps}[/] (see each prediction's failures)")
    if summary.circuit_open:
        table.add_row("stopped", f"[red]circuit breaker: {summary.circuit_open}[/]")
        if summary.discarded_degraded:
            table.add_row("not written", f"{summary.discarded_degraded} degraded result(s) from the outage")
    if summary.remaining:
        table.add_row("not done", f"[yellow]{summary.remaining}[/] (re-run with --resume)")
    table.add_row("time", f"{summary.elapsed_s:.1f} s, {summary.images_per_s:.2f} images/s")
    if summary.truncated_partial_line:
        table.add_row("repaired", "a half-written last line (from a killed run) was removed and redone")
    if summary.retried:
        what = ", ".join(f"{count} {status}" for status, count in sorted(summary.retried.items()))
        table.add_row("retried", f"{what} image(s) from before")
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
    retry_degraded: bool = typer.Option(
        False, "--retry-degraded", help="with --resume: run degraded images again (once the stage is back)"
    ),
    allow_degraded: bool = typer.Option(
        False, "--allow-degraded",
        help="keep going when a required stage (e.g. the VLM server) is down, writing degraded answers",
    ),
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
        EngineChoice.local, "--engine", help="local: this process; ray: a pool of Ray actors (docs/ray.md)"
    ),
    address: str | None = typer.Option(
        None, "--address", help="with --engine ray: the Ray cluster (HOST:PORT or auto; default: a local Ray)"
    ),
) -> None:
    """Locate many images; results go to a JSONL file line by line, so a stopped run can --resume.

    A VLM server is sent one test request first (preflight). If a required stage then fails for 3
    images in a row (or for most of the last 20), the run stops (exit 4): finished lines are kept,
    images in flight are not written; start the stage again and re-run with --resume.
    Export an existing results file later with `geosleuth export RESULTS --format geojson`.
    """
    from geosleuth.agent.exports import EXPORT_SUFFIXES

    if out.suffix.lower() in {s for f, s in EXPORT_SUFFIXES.items() if f != "jsonl"}:
        err_console().print(
            f"[bold red]error:[/] --out {out} is the JSONL results file (needed for --resume); "
            f"use --format {out.suffix.lstrip('.').lower()} to also write that format",
            highlight=False,
        )
        raise typer.Exit(EXIT_USAGE)
    for flag, given in (("--retry-errors", retry_errors), ("--retry-degraded", retry_degraded)):
        if given and not resume:
            err_console().print(f"[bold red]error:[/] {flag} needs --resume", highlight=False)
            raise typer.Exit(EXIT_USAGE)
    if address is not None and engine is not EngineChoice.ray:
        err_console().print("[bold red]error:[/] --address needs --engine ray", highlight=False)
        raise typer.Exit(EXIT_USAGE)

    err = err_console()
    with user_errors():
        from rich.text import Text

        from geosleuth.agent.batch import (
            BatchAborted,
            BatchCircuitOpen,
            BatchInterrupted,
            BatchSummary,
            arun_batch,
            read_batch_input,
        )
        from geosleuth.agent.trace.io import trace_file_name
        from geosleuth.cli.locate_cmd import fatal_errors
        from geosleuth.errors import DataFileError
        from geosleuth.fileio import atomic_write_text

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
        geo = common.open_geolocator(ctx) if engine is EngineChoice.local else None
        if trace_dir is not None:
            trace_dir.mkdir(parents=True, exist_ok=True)

        async def locate_one(item: BatchItem) -> Prediction:
            assert geo is not None
            if trace_dir is None:
                return await geo.alocate(item.path, top_k=top_k)
            prediction, trace = await geo.alocate_with_trace(item.path, top_k=top_k)
            await asyncio.to_thread(atomic_write_text, trace_dir / trace_file_name(item.id), trace.model_dump_json())
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
                task_ids[0], advance=1, rate=f"{done / elapsed:.2f} img/s" if elapsed > 0 else "",
                counts=_progress_counts(s),
            )
            if result.prediction is None:  # ids and messages are shown as text, never as markup
                progress.console.print(Text.assemble(("error ", "red"), f"{result.item.id}: {result.error}"))

        run_summary = BatchSummary(out)

        async def run() -> BatchSummary:
            assert geo is not None
            try:
                # Models load and the VLM server answers one request before the clock starts.
                with err.status("loading models and checking the VLM ..."):
                    await geo.acheck_ready()
                warn_if_tools_fell_back(geo, err)
                with progress:
                    return await arun_batch(
                        batch_input.items, locate_one, out, resume=resume, overwrite=overwrite,
                        retry_errors=retry_errors, retry_degraded=retry_degraded, allow_degraded=allow_degraded,
                        concurrency=concurrency or 2 * config.vlm.concurrency,
                        on_start=on_start, on_result=on_result, fatal_errors=fatal_errors(), summary=run_summary,
                    )
            finally:
                await geo.aclose()

        def run_on_ray() -> BatchSummary:
            from geosleuth.agent.batch.ray_engine import RayBatchOptions, run_ray_batch

            def on_trace(item: BatchItem, trace_json: str) -> None:
                assert trace_dir is not None
                atomic_write_text(trace_dir / trace_file_name(item.id), trace_json)

            from geosleuth.vlm.preflight import check_configured_server

            with err.status("checking the VLM ..."):
                asyncio.run(check_configured_server(config.vlm))  # the actors load the models themselves
            with progress:
                return run_ray_batch(
                    batch_input.items, config, out, resume=resume, overwrite=overwrite, retry_errors=retry_errors,
                    retry_degraded=retry_degraded, allow_degraded=allow_degraded, top_k=top_k,
                    options=RayBatchOptions(address=address, concurrency=concurrency or 2 * config.vlm.concurrency),
                    on_start=on_start, on_result=on_result, on_trace=on_trace if trace_dir is not None else None,
                    fatal_errors=fatal_errors(), summary=run_summary,
                )

        stopped: str | None = None
        exit_code = 0
        try:
            if geo is None:
                run_on_ray()
            else:
                asyncio.run(run())
        except KeyboardInterrupt:
            run_summary.interrupted = True
            stopped = "interrupted: finished images are in the results file; re-run with --resume"
            exit_code = EXIT_INTERRUPTED
        except BatchCircuitOpen as exc:
            stopped, exit_code = str(exc), EXIT_STAGE_UNAVAILABLE
        except BatchAborted as exc:
            stopped, exit_code = str(exc), EXIT_USAGE
        except BatchInterrupted as exc:
            stopped, exit_code = str(exc), EXIT_INTERRUPTED

        exports: list[str] = []
        if stopped is None:
            exports = _export_after_run(out, formats)
        Console().print(summary_table(run_summary, exports))
        if stopped is not None:
            err.print(Text.assemble(("stopped: ", "bold red"), stopped))
            raise typer.Exit(exit_code)
    if run_summary.failed:
        raise typer.Exit(EXIT_PARTIAL_FAILURE)
    if run_summary.degraded_total and not allow_degraded:
        err.print(f"[yellow]{run_summary.degraded_total} degraded answer(s) in {out}: exit 3; once the stage is "
                  "back, re-run them with --resume --retry-degraded (or accept them with --allow-degraded)[/]",
                  highlight=False)
        raise typer.Exit(EXIT_DEGRADED)


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
        degraded = f", {report.degraded} degraded" if report.degraded else ""
        lines.append(f"{fmt.value}: {report.path} ({report.written} images{degraded}{skipped})")
    return lines
