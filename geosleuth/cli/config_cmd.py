"""``geosleuth config show``."""

from __future__ import annotations

import typer

from geosleuth.cli.common import state

app = typer.Typer(no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the effective configuration (defaults < file < environment < --set) as TOML."""
    config = state(ctx).config()
    typer.echo(f"# config hash: {config.config_hash()}")
    typer.echo(config.to_toml())
