"""`geosleuth ui`: serve the web app (chat over a photo, with a map) on this machine."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import typer

from geosleuth.cli.common import err_console, state, user_errors
from geosleuth.errors import ConfigError


def ui(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; any non-loopback address needs --token"),
    port: int = typer.Option(8765, "--port", "-p", help="port to listen on (0: any free port)"),
    token: str | None = typer.Option(
        None, "--token", envvar="GEOSLEUTH_UI_TOKEN", show_envvar=True,
        help="access token every request must carry (required when --host is not a loopback address)",
    ),
    max_upload_mb: float = typer.Option(
        50.0, "--max-upload-mb", min=0.1, help="largest photo or results file accepted, in MB"
    ),
    sessions_db: Path | None = typer.Option(
        None, "--sessions-db", help="chat session store (default: the one `geosleuth chat` uses)"
    ),
) -> None:
    """Open a web app: drop a photo, watch the steps, see the evidence on a map, chat about the answer."""
    import uvicorn

    from geosleuth.api import Geolocator
    from geosleuth.ui.app import UISettings, create_app
    from geosleuth.ui.security import check_bind

    with user_errors():
        check_bind(host, token)
        config = state(ctx).config()
        sock = _bind(host, port)
    geo = Geolocator.from_config(config)
    settings = UISettings(
        max_upload_bytes=int(max_upload_mb * 1e6), token=token, db_path=sessions_db,
        # On loopback, only requests addressed to loopback names (a DNS-rebinding page uses its own name).
        allowed_hosts=("127.0.0.1", "localhost") if host in ("127.0.0.1", "localhost") else None,
    )
    app = create_app(geo, settings)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}/" + (f"?token={token}" if token else "")
    # stdout: the address, alone on its line (scripts and tests read it); the rest goes to stderr.
    typer.echo(f"geosleuth ui: {url}")
    sys.stdout.flush()
    err_console().print("loading models, then serving; Ctrl-C stops", highlight=False, markup=False)
    server = uvicorn.Server(uvicorn.Config(app, log_level=os.environ.get("GEOSLEUTH_UI_LOG", "warning"),
                                           lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        geo.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from None
    return sock


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
