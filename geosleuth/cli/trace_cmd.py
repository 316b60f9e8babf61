"""`geosleuth trace ...` commands: look at a reasoning trace in the terminal or as an HTML page."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from geosleuth.cli.common import err_console, user_errors

app = typer.Typer(no_args_is_help=True)

_FILE_HELP = (
    "a trace JSON (from `geosleuth locate --trace`), a JSONL of traces, or a folder of them (`batch --trace-dir`)"
)


@app.command("show")
def show(
    file: Path = typer.Argument(..., help=_FILE_HELP, exists=True, readable=True),
    trace_id: str | None = typer.Option(
        None, "--id", help="which trace, when FILE holds several (its id, trace id or image path)"
    ),
) -> None:
    """Show a trace as a tree: steps, clues, hypotheses, candidates with their scores, decision."""
    with user_errors():
        from geosleuth.agent.trace import load_traces, select_trace, trace_tree

        loaded = select_trace(load_traces(file), trace_id, str(file))
        Console().print(trace_tree(loaded.trace))


@app.command("html")
def html_pages(
    file: Path = typer.Argument(..., help=_FILE_HELP, exists=True, readable=True),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="folder for the pages (default: FILE's name + '-html', next to it)"
    ),
    trace_id: str | None = typer.Option(None, "--id", help="write only this trace's page"),
    no_land: bool = typer.Option(False, "--no-land", help="leave land and borders off the maps"),
) -> None:
    """Write one self-contained HTML page per trace (inline SVG map, reasoning, score tables)."""
    with user_errors():
        from geosleuth.agent.trace import html_file_name, load_basemap, load_traces, select_trace, trace_html

        traces = load_traces(file)
        if trace_id is not None:
            traces = [select_trace(traces, trace_id, str(file))]
        folder = out if out is not None else file.with_name(f"{file.stem if file.is_file() else file.name}-html")
        folder.mkdir(parents=True, exist_ok=True)
        land = None if no_land else load_basemap()
        used: dict[str, int] = {}
        written: list[tuple[str, Path]] = []
        for loaded in traces:
            name = html_file_name(loaded.key)
            if name in used:  # distinct ids may sanitise to one name
                used[name] += 1
                name = f"{name[:-5]}-{used[name]}.html"
            else:
                used[name] = 1
            page = folder / name
            page.write_text(trace_html(loaded.trace, land=land), encoding="utf-8")
            written.append((loaded.key, page))
        if len(written) > 1:
            _write_index(folder / "index.html", written, file)
        console = err_console()
        for _, page in written[:5]:
            console.print(f"wrote {page}", highlight=False, markup=False)
        if len(written) > 5:
            console.print(f"... and {len(written) - 5} more pages; open {folder / 'index.html'}", highlight=False,
                          markup=False)


def _write_index(path: Path, pages: list[tuple[str, Path]], source: Path) -> None:
    import html

    rows = "".join(
        f'<li><a href="{html.escape(page.name)}">{html.escape(key)}</a></li>' for key, page in pages
    )
    path.write_text(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>traces of '
        f"{html.escape(source.name)}</title></head><body><h1>{len(pages)} traces from "
        f"{html.escape(source.name)}</h1><ul>{rows}</ul></body></html>\n",
        encoding="utf-8",
    )
