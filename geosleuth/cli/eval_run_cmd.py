"""`geosleuth eval run` (a benchmark through one preset, scored and reported) and `geosleuth eval presets`.

Registered on the ``eval`` sub-app by :func:`register`. Heavy libraries load inside the commands.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from geosleuth.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_STAGE_UNAVAILABLE,
    EXIT_USAGE,
    err_console,
    state,
    user_errors,
)

if TYPE_CHECKING:
    from geosleuth.agent.batch import BatchResult, BatchSummary
    from geosleuth.eval.run import RunResult



class BenchmarkName(str, Enum):
    im2gps3k = "im2gps3k"
    yfcc4k = "yfcc4k"
    generic = "generic"


@contextmanager
def _data_warnings_on(console: Console) -> Iterator[None]:
    """Show dataset/report warnings (swapped header, missing images, skipped plots) as they happen."""
    from geosleuth.eval.datasets import DatasetWarning
    from geosleuth.eval.report import ReportWarning

    with warnings.catch_warnings():
        original = warnings.showwarning
        warnings.simplefilter("always", DatasetWarning)
        warnings.simplefilter("always", ReportWarning)

        def show(message: Any, category: type[Warning], filename: str, lineno: int, *args: Any, **kw: Any) -> None:
            if issubclass(category, (DatasetWarning, ReportWarning)):
                console.print(Text.assemble(("warning: ", "yellow"), str(message)))
            else:
                original(message, category, filename, lineno, *args, **kw)

        warnings.showwarning = show
        yield


def run(
    ctx: typer.Context,
    dataset: BenchmarkName = typer.Argument(..., help="benchmark format of --truth"),
    truth: Path = typer.Option(
        ..., "--truth", "-t", help="ground-truth metadata (e.g. im2gps3k_places365.csv), or the folder holding it"
    ),
    images: Path = typer.Option(..., "--images", "-i", help="folder of the benchmark's images"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder: predictions, metrics, report, manifest"),
    preset: str = typer.Option(
        "full", "--preset", "-p", help="baseline or ablation (`geosleuth eval presets` lists them)"
    ),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="only the first N images of the dataset"),
    exclude_same_author: bool = typer.Option(
        False, "--exclude-same-author",
        help="also keep each image's photographer's gallery pictures out of retrieval (its own id always is)",
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-j", min=1, help="images in flight (default: 2 x vlm.concurrency)"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="discard the run already in --out and start again (default: resume it)"
    ),
    traces: bool = typer.Option(False, "--traces", help="also write one trace JSON per image to OUT/traces"),
    resamples: int = typer.Option(1000, "--resamples", min=0, help="bootstrap resamples (0: no intervals)"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    allow_degraded: bool = typer.Option(
        False, "--allow-degraded",
        help="keep going when a required stage is down and report the run anyway, titled as degraded",
    ),
    retry_degraded: bool = typer.Option(
        False, "--retry-degraded", help="run the images answered without a required stage again"
    ),
) -> None:
    """Run a benchmark through one preset of the pipeline, then score it and write the report.

    Resumes by default: run the same command again after a crash or Ctrl-C and only the missing
    images are located. Missing or unreadable images count as failures (misses) and are listed.
    Your --config / --set settings apply, and --set wins over the preset's own settings.
    A VLM server is sent one test request first. A run in which a required stage (the VLM, a
    gallery) was missing for more than 1% of the images is not reported unless --allow-degraded.
    Exits 0 when the run is scored (failed images are part of the score), 2 on a setup error,
    3 when too many answers are degraded, 4 when a required stage is unavailable (preflight, or the
    circuit breaker stopped the run), 130 when interrupted.
    """
    from geosleuth.agent.batch import BatchAborted, BatchCircuitOpen, BatchInterrupted
    from geosleuth.eval.presets import get_preset
    from geosleuth.eval.run import run_evaluation

    cli = state(ctx)
    err = err_console()
    with user_errors():
        get_preset(preset)  # a typo fails before any loading
        base = cli.config()
    progress = _progress(err)
    status = err.status("loading the dataset and the models ...")
    run_summary: list[BatchSummary] = []

    def on_loaded(_: Any) -> None:
        status.stop()

    def on_start(summary: BatchSummary) -> None:
        run_summary.append(summary)
        if summary.truncated_partial_line:
            err.print("[yellow]removed a half-written last line from a killed run; that image runs again[/]")
        if summary.previously_done:
            err.print(f"resuming: {summary.previously_done} of {summary.total} images already done", highlight=False)
        progress.start()
        progress.add_task("locating", total=summary.total - summary.previously_done)

    def on_result(result: BatchResult) -> None:
        progress.advance(progress.task_ids[0])
        if result.prediction is None:
            progress.console.print(Text.assemble(("failed ", "red"), f"{result.item.id}: {result.error}"))

    stopped: tuple[str, int] | None = None
    outcome: RunResult | None = None
    with user_errors(), _data_warnings_on(err):
        status.start()
        try:
            outcome = run_evaluation(
                dataset.value, truth, images, out, preset=preset, config=base, limit=limit,
                exclude_same_author=exclude_same_author, concurrency=concurrency, resume=True, overwrite=overwrite,
                overrides=cli.overrides, save_traces=traces, resamples=resamples, seed=seed,
                on_start=on_start, on_result=on_result, on_loaded=on_loaded,
                allow_degraded=allow_degraded, retry_degraded=retry_degraded,
            )
        except BatchInterrupted as exc:
            stopped = (str(exc), EXIT_INTERRUPTED)
        except BatchCircuitOpen as exc:
            stopped = (str(exc), EXIT_STAGE_UNAVAILABLE)
        except BatchAborted as exc:
            stopped = (str(exc), EXIT_USAGE)
        finally:
            status.stop()
            progress.stop()
    if stopped is not None:
        err.print(Text.assemble(("stopped: ", "bold red"), stopped[0]))
        raise typer.Exit(stopped[1])
    assert outcome is not None
    _print_outcome(outcome)


def _progress(err: Console) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
    )


def _print_outcome(outcome: RunResult) -> None:
    from geosleuth.eval.report import metrics_table
    from geosleuth.eval.run_folder import MISSING_IMAGES_FILE

    console = Console()
    m = outcome.manifest
    console.print(metrics_table(outcome.metrics, title=f"{m['preset']} on {m['dataset']} — {outcome.metrics.distance}"))
    counts = m["counts"]
    failures = counts["failures"]
    line = f"{counts['images']} images: {counts['located']} located, {failures} failed (counted as misses)"
    if outcome.missing_images:
        line += f"; {len(outcome.missing_images)} image file(s) missing or unreadable, listed in {MISSING_IMAGES_FILE}"
    console.print(line, highlight=False)
    console.print(Text(f"report: {outcome.report.report_md}"))
    console.print(Text(f"manifest: {outcome.manifest_path}  (config {m['config_hash']}, commit {m['git_commit']})"))


def presets(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="print the presets as JSON"),
) -> None:
    """List the evaluation presets (baselines and ablations) and the settings each one overrides.

    Values in {braces} depend on your configuration; "resolved" shows them filled in.
    """
    from rich.table import Table

    from geosleuth.eval.presets import describe_presets

    with user_errors():
        rows = describe_presets(state(ctx).config())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="evaluation presets (geosleuth eval run DATASET ... --preset NAME)", show_lines=True)
    table.add_column("preset", no_wrap=True)
    table.add_column("kind")
    table.add_column("what it is")
    table.add_column("settings (resolved with your configuration)")
    for row in rows:
        settings = "\n".join(row["resolved"]) or "(none: the configuration as it is)"
        table.add_row(row["name"], row["kind"], row["description"], Text(settings))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``presets`` to the ``eval`` sub-app."""
    app.command("run")(run)
    app.command("presets")(presets)
