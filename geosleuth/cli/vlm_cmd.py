"""`geosleuth vlm ...` commands: serve the configured VLM with vLLM, and check the configured backend."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from geosleuth.cli.common import EXIT_PARTIAL_FAILURE, err_console, state, user_errors

if TYPE_CHECKING:
    from PIL import Image

    from geosleuth.config import Config
    from geosleuth.vlm.backends import VLMReply

app = typer.Typer(no_args_is_help=True)


def _is_qwen_vl(model: str) -> bool:
    # Only Qwen-VL processors take min/max_pixels; other processors may reject unknown kwargs.
    name = model.lower()
    return "qwen" in name and "vl" in name


@app.command("serve")
def serve(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="model to serve (default: vlm.server_model)"),
    host: str | None = typer.Option(None, "--host", help="default: serve.host"),
    port: int | None = typer.Option(None, "--port", help="default: serve.port (0 = any free port)"),
    log: Path | None = typer.Option(None, "--log", help="server log file (default: a temporary file)"),
) -> None:
    """Start vLLM's OpenAI-compatible server for the VLM, wait until it is healthy, stop it on Ctrl-C."""
    from geosleuth.vlm.server import VLLMServer, tool_call_parser_for

    config = state(ctx).config()
    served = model or config.vlm.server_model
    console = err_console()
    parser = tool_call_parser_for(served, config.serve.tool_call_parser)
    if parser is None:
        console.print(
            f"[yellow]note:[/] serving {served} without tool calling (serve.tool_call_parser = "
            f"{config.serve.tool_call_parser!r}); agent.mode=tools will fall back to the fixed pipeline",
            highlight=False, soft_wrap=True,
        )
    server = VLLMServer(
        served,
        python=config.serve.python,
        host=host or config.serve.host,
        port=config.serve.port if port is None else port,
        served_model_name=served,
        max_model_len=config.serve.max_model_len,
        # With tools the model sees the photo and the latest zoom (agent/toolloop keeps two pictures).
        images_per_prompt=max(config.serve.images_per_prompt, 2) if parser else config.serve.images_per_prompt,
        max_pixels=config.vlm.max_image_pixels if _is_qwen_vl(served) else None,
        dtype=config.vlm.dtype,
        extra_args=config.serve.extra_args,
        tool_call_parser=parser,
        startup_timeout=config.serve.startup_timeout_s,
        log_path=log,
    )
    # SIGTERM (a service manager, `kill`) must stop the server's process group too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    console.print(f"starting vLLM for [bold]{served}[/] (this can take minutes: weights load, kernels warm up)")
    console.print(f"command: {' '.join(server.command())}", highlight=False, soft_wrap=True)
    try:
        with user_errors():
            server.start()
        Console().print(server.base_url)  # stdout: just the URL, for scripts
        console.print(
            f"[green]ready[/] at {server.base_url} (log: {server.log_path}); use it with "
            f"--set vlm.backend=openai --set vlm.base_url={server.base_url}. Ctrl-C stops the server.",
            highlight=False,
            soft_wrap=True,
        )
        while server.is_running():
            time.sleep(1.0)
        console.print(f"[bold red]error:[/] the vLLM server exited on its own; last log lines:\n{server.log_tail(30)}")
        raise typer.Exit(EXIT_PARTIAL_FAILURE)
    except KeyboardInterrupt:
        console.print("stopping the vLLM server ...")
    finally:
        server.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _test_picture() -> Image.Image:
    """A synthetic picture (sky, ground, a road) for checking the plumbing when no photo is given."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (448, 336), (120, 170, 230))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 200, 448, 336), fill=(70, 120, 50))
    draw.polygon([(200, 200), (248, 200), (330, 336), (118, 336)], fill=(90, 90, 90))
    return picture


async def _ask(config: Config, backend: Any, picture: Image.Image, samples: int) -> tuple[list[VLMReply], float]:
    from geosleuth.prompts.render import load_template, render
    from geosleuth.prompts.schema import SCHEMA_NAME, answer_json_schema, answer_skeleton
    from geosleuth.vlm.backends import ChatMessage, VLMRequest, as_replies

    template = load_template(config.prompts.reasoning_template)
    prompt = render(template, neighbors=[], dissimilar=[], gps_candidates=[], answer_format=answer_skeleton())
    request = VLMRequest(
        messages=[ChatMessage("user", prompt, [picture])],
        json_schema=answer_json_schema(),
        n=samples,
        temperature=config.vlm.temperature,
        max_tokens=config.vlm.max_new_tokens,
        schema_name=SCHEMA_NAME,
    )
    started = time.perf_counter()
    try:
        texts = as_replies(await backend.generate(request))
    finally:
        await backend.aclose()
    return texts, time.perf_counter() - started


@app.command("check")
def check(
    ctx: typer.Context,
    image: Path | None = typer.Option(None, "--image", help="photo to send (default: a synthetic test picture)"),
    samples: int = typer.Option(1, "--samples", min=1, help="samples to ask for in the one request"),
) -> None:
    """Send one real request to the configured VLM backend; report latency and whether the answer parsed.

    Exit code 0: every sample parsed as the answer schema; 1: some did not; 2: no answer at all.
    """
    from geosleuth.prompts.schema import AnswerParseError, parse_answer
    from geosleuth.vlm.registry import create_backend

    config = state(ctx).config()
    console = err_console()
    with user_errors():
        if image is not None:
            from geosleuth.imageio import load_image

            picture = load_image(image, max_pixels=config.vlm.max_image_pixels).image
        else:
            console.print("no --image given: sending a synthetic test picture (the answer will be meaningless)")
            picture = _test_picture()
        started = time.perf_counter()
        backend = create_backend(config.vlm)
        setup_s = time.perf_counter() - started
        texts, latency_s = asyncio.run(_ask(config, backend, picture, samples))

    table = Table("sample", "parsed", "answer / error", "raw reply (start)")
    parsed = 0
    for index, reply in enumerate(texts):
        text = reply.text
        try:
            if reply.cut_off:
                raise AnswerParseError(f"cut off at the token limit ({config.vlm.max_new_tokens}, vlm.max_new_tokens)")
            answer = parse_answer(text)
        except AnswerParseError as exc:
            table.add_row(str(index), "[red]no[/]", str(exc), repr(text[:80]))
            continue
        parsed += 1
        summary = (
            f"{answer.latitude:.4f}, {answer.longitude:.4f} ({answer.country}"
            f"{', ' + answer.city if answer.city else ''}), confidence {answer.confidence:.2f}"
        )
        table.add_row(str(index), "[green]yes[/]", summary, repr(text[:80]))
    out = Console()
    out.print(
        f"backend {config.vlm.backend}, model {backend.model_id}: setup {setup_s:.2f} s, "
        f"request latency {latency_s:.2f} s for {len(texts)} sample(s)",
        highlight=False,
    )
    out.print(table)
    out.print(f"structured output parsed: {parsed}/{len(texts)}")
    if parsed < len(texts) or not texts:
        raise typer.Exit(EXIT_PARTIAL_FAILURE)
