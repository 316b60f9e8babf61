"""``geosleuth models list|pull``: the explicit, visible step that fetches weights."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from geosleuth.cli.common import state, user_errors

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_models(ctx: typer.Context) -> None:
    """Show the models the configuration uses and whether each is on this machine."""
    from geosleuth.models import configured_models, is_available

    table = Table("role", "model", "on this machine")
    for ref in configured_models(state(ctx).config()):
        present = True if ref.shipped else is_available(ref.model_id)
        table.add_row(ref.role, ref.model_id, "yes (shipped)" if ref.shipped else ("yes" if present else "no"))
    Console().print(table)


@app.command("pull")
def pull_models(
    ctx: typer.Context,
    model_ids: list[str] = typer.Argument(None, help="hub ids to fetch (default: every model the config uses)"),
) -> None:
    """Download model weights from the Hugging Face hub (needs network access to huggingface.co)."""
    from geosleuth.models import configured_models, pull

    ids = model_ids or [r.model_id for r in configured_models(state(ctx).config()) if not r.shipped]
    console = Console(stderr=True)
    for model_id in ids:
        console.print(f"fetching [bold]{model_id}[/] ...")
        with user_errors():
            path = pull(model_id)
        console.print(f"  -> {path}")
