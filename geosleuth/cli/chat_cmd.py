"""``geosleuth chat``: locate a photo, then talk about it (the chat engine is ``geosleuth.agent.chat``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from geosleuth.cli import common
from geosleuth.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, err_console, user_errors, warn_if_tools_fell_back
from geosleuth.cli.display import exif_gps_of, print_prediction
from geosleuth.errors import GeosleuthError

if TYPE_CHECKING:
    from geosleuth.api import Geolocator


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
        geo = common.open_geolocator(ctx)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(geo.acheck_ready())  # preflight: a VLM server answers one request first
            warn_if_tools_fell_back(geo, err_console())
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

    from geosleuth.cli.progress import LocateProgress
    from geosleuth.fileio import atomic_write_text
    from geosleuth.geo import haversine_km

    out, err = Console(), err_console()
    session = loop.run_until_complete(geo.open_chat(image, session_id=resume_id))
    try:
        out.print(Text.assemble(("session ", "dim"), (session.session_id, "bold cyan"),
                                (f"  (resume later: geosleuth chat --resume {session.session_id})", "dim")))
        with LocateProgress(err, f"locating {session.image_path}") as progress:
            reply = loop.run_until_complete(session.start(on_step=progress.on_step, on_progress=progress.on_progress))
        current = reply.prediction
        if reply.kind == "resumed":
            turns = len(loop.run_until_complete(session.history()))
            out.print(f"resumed session {session.session_id} ({turns} earlier turns) about {session.image_path}",
                      markup=False,
                      highlight=False)
            _show_constraints(out, reply.constraints)
        if current is not None:
            print_prediction(out, current, session.image_path, exif_gps=exif_gps_of(current, session.image_path))
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
                atomic_write_text(Path(target).expanduser(), trace.model_dump_json(indent=2) + "\n")
                out.print(f"trace written to {target}; view it with `geosleuth trace show {target}`", highlight=False,
                          markup=False)
                continue
            if command.startswith("/"):
                out.print(f"unknown command {command.split()[0]!r}; /help lists them", style="yellow", highlight=False,
                          markup=False)
                continue
            # A hint re-locates: its steps and the VLM's tokens show as for the first answer.
            with LocateProgress(err, "thinking") as progress:
                try:
                    reply = loop.run_until_complete(
                        session.ask(message, on_step=progress.on_step, on_progress=progress.on_progress)
                    )
                except GeosleuthError as exc:
                    # One failed turn (e.g. the VLM server went away) does not end the conversation.
                    out.print(Text.assemble(("error: ", "bold red"), str(exc)))
                    continue
            if reply.kind == "relocated" and reply.prediction is not None:
                _show_constraints(out, reply.constraints, empty="no hints (cleared)")
                for note in reply.notes:
                    out.print(note, style="dim", highlight=False, markup=False)
                new = reply.prediction
                if current is not None and current.ok and new.ok:
                    moved = float(haversine_km(current.lat, current.lon, new.lat, new.lon))
                    out.print(f"moved {moved:,.0f} km from the previous answer", style="dim", highlight=False)
                print_prediction(out, new, session.image_path, exif_gps=exif_gps_of(new, session.image_path))
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
