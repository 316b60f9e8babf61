"""``geosleuth config show``."""

from __future__ import annotations

import typer

from geosleuth.cli.common import state

app = typer.Typer(no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the effective configuration (defaults < file < environment < --set) as TOML."""
    config = state(ctx).config()
    from geosleuth.recipes import get_recipe

    typer.echo(f"# config hash: {config.config_hash()}")
    if config.vlm.recipe != "auto":
        recipe = get_recipe(config.vlm.recipe)
        typer.echo(f"# device recipe: {recipe.name} ({config.vlm.recipe_reason or 'set'}): {recipe.description}")
        typer.echo("# it fills only settings you left unset; choose another with --set vlm.recipe=cpu|gpu|gpu-small")
    typer.echo(config.to_toml())
