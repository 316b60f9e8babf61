"""The ``geosleuth`` command line: one entry point, one sub-command module per area.

Sub-command modules import heavy libraries (torch, transformers, faiss) inside their command
functions, so ``geosleuth --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from geosleuth import __version__
from geosleuth.cli import (
    batch_cmd,
    chat_cmd,
    config_cmd,
    eval_cmd,
    export_cmd,
    index_cmd,
    locate_cmd,
    models_cmd,
    trace_cmd,
    ui_cmd,
    vlm_cmd,
)
from geosleuth.cli.common import EXIT_CODES_HELP, CLIState

app = typer.Typer(
    name="geosleuth",
    help="Where on Earth was this photo taken? Retrieval + a vision-language model + geographic verification.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"geosleuth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file (default: $GEOSLEUTH_CONFIG or ./geosleuth.toml)"
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="override one setting, e.g. --set vlm.backend=openai (repeatable)"
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    ctx.obj = CLIState(config_path=config, overrides=list(set_))


app.command("locate", epilog=EXIT_CODES_HELP)(locate_cmd.locate)
app.command("batch", epilog=EXIT_CODES_HELP)(batch_cmd.batch)
app.command("export")(export_cmd.export)
app.command("chat", epilog=EXIT_CODES_HELP)(chat_cmd.chat)
ui_cmd.register(app)
app.add_typer(index_cmd.app, name="index", help="Build, inspect and search image-gallery indexes.")
app.add_typer(vlm_cmd.app, name="vlm", help="Serve and check the vision-language model.")
app.add_typer(eval_cmd.app, name="eval", help="Score predictions and run benchmarks.")
app.add_typer(trace_cmd.app, name="trace", help="Inspect reasoning traces.")
app.add_typer(models_cmd.app, name="models", help="List and download model weights.")
app.add_typer(config_cmd.app, name="config", help="Show the effective configuration.")


def main() -> None:
    # The console's progress is ours: silence transformers' per-load weight bars and advisory warnings
    # (users can still opt back in through the same variables). `models pull` keeps its download bars.
    if sys.argv[1:2] != ["models"]:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    app()
