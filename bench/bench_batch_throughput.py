"""Batch throughput against a real vLLM OpenAI server on CPU (tiny random Qwen2.5-VL): images/s of
the batch runner with the Geolocator (vlm.backend=openai) vs the same VLM requests sent directly.

Four figures, same images, same server:

  A. geosleuth batch: ``arun_batch`` + ``Geolocator.alocate`` with 2 x C images in flight and at most
     C VLM requests in flight (vlm.concurrency = C), as ``geosleuth batch`` runs by default; results
     written and fsync'd line by line. Every VLM request it makes
     is recorded (messages, schema, n, temperature, max_tokens), per image.
  B. direct: the recorded requests of each image, sent with the ``openai`` async client, C images in
     flight and at most C requests in flight (the same cap as vlm.concurrency in A), each image's
     requests at once. No retrieval, verification or file writing: the ceiling for A.
  C. sequential like G3's scripts: the recorded requests one after another, one image at a time,
     with the synchronous ``openai`` client.
  D. geosleuth batch with one image in flight.
  E. the batch runner alone: ``arun_batch`` whose locate function sends B's requests for its image
     and returns a fixed Prediction (no pipeline). E / B is the runner's own overhead; A / E is
     what the pipeline's CPU work costs when it shares the cores with the server.

Target: A / B >= 0.8. The server gets its own venv's python ($GEOSLEUTH_VLLM_PYTHON or
<repo>/.venv-vllm/bin/python, see docs/vllm-cpu.md). On 2 cores the server and the pipeline share
the CPU, so A pays for its own CPU work (image decoding, CLIP, GPS gallery, verification) in
server time; the printout says how much CPU each side used.

    python bench/bench_batch_throughput.py [--images 48] [--concurrency 8] [--variants 0,5]
           [--samples 2] [--base-url URL --model NAME  (use a running server instead)]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVED_NAME = "tiny-qwen2.5-vl"

# Which image a VLM request belongs to (set per image in A's locate function; asyncio tasks and
# worker threads inherit it).
_CURRENT_IMAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_current_image", default=None)


class RecordingBackend:
    """Delegates to the real backend and keeps every request, keyed by the image it was made for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.requests: dict[str, list[Any]] = {}

    async def generate(self, request: Any) -> list[str]:
        self.requests.setdefault(_CURRENT_IMAGE.get() or "?", []).append(request)
        return await self.inner.generate(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and the live members of its process group (vLLM forks an
    engine core)."""
    import psutil

    from geosleuth.vlm.server import process_group_members

    total = 0.0
    for member in process_group_members(os.getpgid(pid)) or [pid]:
        try:
            times = psutil.Process(member).cpu_times()
        except psutil.Error:
            continue  # ended meanwhile
        total += times.user + times.system
    return total


def _pictures(folder: Path, count: int) -> list[Path]:
    """Distinct small photos (different colours and stripes), so no request is a cache hit."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        picture = Image.new("RGB", (320, 240), ((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 90) % 256))
        for x in range(0, 320, 2):
            picture.putpixel((x, (x * (i + 3)) % 240), (250, 250, 250))
        path = folder / f"img{i:03d}.jpg"
        picture.save(path, quality=90)
        paths.append(path)
    return paths


def _start_server(workdir: Path, python: str) -> Any:
    from geosleuth.vlm.server import VLLMServer, vllm_import_error

    error = vllm_import_error(python)
    if error is not None:
        sys.exit(f"vLLM is not usable with {python}: {error}\nbuild it: bash scripts/build_vllm_cpu_env.sh .venv-vllm")
    model_dir = workdir / "tiny-qwen2.5-vl"
    built = subprocess.run(
        [python, str(REPO / "geosleuth" / "testing" / "tiny_qwen_vl.py"), str(model_dir)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if built.returncode != 0:
        sys.exit(f"building the tiny Qwen2.5-VL failed:\n{built.stderr[-2000:]}")
    server = VLLMServer(
        model_dir, python=python, port=0, served_model_name=SERVED_NAME, max_model_len=1024,
        images_per_prompt=1, dtype="float32", extra_args=["--enforce-eager", "--seed", "0"],
        env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}, startup_timeout=600,
        log_path=workdir / "vllm-server.log",
    )
    started = time.perf_counter()
    server.start()
    print(f"vLLM server healthy after {time.perf_counter() - started:.0f} s at {server.base_url} (pid {server.pid})")
    return server


def _config(args: argparse.Namespace, base_url: str, model: str, workdir: Path) -> Any:
    from geosleuth.config import Config
    from geosleuth.index.gps_gallery import geoclip_gallery_csv
    from geosleuth.testing.tiny_clip import build_tiny_clip

    clip_dir = build_tiny_clip(workdir / "tiny-clip")
    lines = geoclip_gallery_csv().read_text().splitlines()
    gps_csv = workdir / "gps_2k.csv"
    gps_csv.write_text("\n".join([lines[0], *lines[1::50]]) + "\n")
    return Config.model_validate({
        "encoders": {"image_model": str(clip_dir), "device": "cpu", "dtype": "float32"},
        "index": {"gps_gallery": str(gps_csv), "cache_dir": str(workdir / "cache")},
        "retrieval": {"k_neighbors": 5, "k_gps": 10},
        "vlm": {
            "backend": "openai", "base_url": base_url, "server_model": model, "concurrency": args.concurrency,
            "samples_per_variant": args.samples, "max_new_tokens": args.max_tokens, "timeout_s": 300,
            "temperature": args.temperature,
            "max_retries": 1,
        },
        "prompts": {"neighbor_counts": [int(v) for v in args.variants.split(",")]},
    })


def _openai_kwargs(request: Any, model: str, max_pixels: int) -> dict[str, Any]:
    """The chat-completion arguments for a VLMRequest, built as the OpenAI backend builds them."""
    from geosleuth.vlm.backends import downscale_image, image_data_url

    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if not message.images:
            messages.append({"role": message.role, "content": message.text})
            continue
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image_data_url(downscale_image(img, max_pixels))}}
            for img in message.images
        ]
        content.append({"type": "text", "text": message.text})
        messages.append({"role": message.role, "content": content})
    kwargs: dict[str, Any] = {
        "model": model, "messages": messages, "n": request.n, "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    if request.json_schema is not None:
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": True},
        }
    return kwargs


async def _run_pipeline(config: Any, images: list[Path], concurrency: int, out: Path, *,
                        record: bool) -> tuple[float, Any, RecordingBackend | None]:
    from geosleuth.agent.batch import BatchItem, arun_batch
    from geosleuth.api import Geolocator

    geo = Geolocator.from_config(config)
    await asyncio.to_thread(lambda: geo.resources)  # load the models before the clock starts
    recorder = None
    if record:
        recorder = RecordingBackend(geo.resources.backend)
        geo.resources.backend = recorder
    # Warm-up: one image through the whole pipeline (first-call costs: thread pools, client, kernels).
    await geo.alocate(images[0])

    async def locate(item: BatchItem) -> Any:
        token = _CURRENT_IMAGE.set(item.id)
        try:
            return await geo.alocate(item.path)
        finally:
            _CURRENT_IMAGE.reset(token)

    if recorder is not None:
        recorder.requests.clear()
    items = [BatchItem(p.name, str(p)) for p in images]
    try:
        started = time.perf_counter()
        summary = await arun_batch(items, locate, out, concurrency=concurrency, overwrite=True)
        elapsed = time.perf_counter() - started
    finally:
        await geo.aclose()
    return elapsed, summary, recorder


async def _run_direct(per_image: list[list[dict[str, Any]]], base_url: str, concurrency: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=300)
    requests_in_flight = asyncio.Semaphore(concurrency)
    queue = iter(per_image)

    async def one(kwargs: dict[str, Any]) -> None:
        async with requests_in_flight:
            await client.chat.completions.create(**kwargs)

    async def worker() -> None:
        for requests in queue:
            await asyncio.gather(*(one(k) for k in requests))

    try:
        await client.chat.completions.create(**per_image[0][0])  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await client.close()


async def _run_runner_only(per_image: list[list[dict[str, Any]]], images: list[Path], base_url: str,
                           concurrency: int, out: Path) -> float:
    from openai import AsyncOpenAI

    from geosleuth.agent.batch import BatchItem, arun_batch
    from geosleuth.types import ImageRef, Prediction

    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=300)
    requests_in_flight = asyncio.Semaphore(concurrency)
    by_id = {p.name: r for p, r in zip(images, per_image, strict=True)}

    async def one(kwargs: dict[str, Any]) -> None:
        async with requests_in_flight:
            await client.chat.completions.create(**kwargs)

    async def locate(item: BatchItem) -> Prediction:
        await asyncio.gather(*(one(k) for k in by_id[item.id]))
        return Prediction(image=ImageRef(path=item.path), lat=0.5, lon=0.5)

    items = [BatchItem(p.name, str(p)) for p in images]
    try:
        await client.chat.completions.create(**per_image[0][0])  # warm-up
        started = time.perf_counter()
        await arun_batch(items, locate, out, concurrency=concurrency, overwrite=True)
        return time.perf_counter() - started
    finally:
        await client.close()


def _run_sequential(per_image: list[list[dict[str, Any]]], base_url: str) -> float:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=300)
    started = time.perf_counter()
    for requests in per_image:
        for kwargs in requests:
            client.chat.completions.create(**kwargs)
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8, help="VLM requests in flight (vlm.concurrency)")
    parser.add_argument("--images-in-flight", type=int,
                        help="images in flight in A (default: 2 x --concurrency, as `geosleuth batch` does); "
                             "more than the request cap keeps the server busy while some images are in CPU stages")
    parser.add_argument("--variants", default="0,5", help="prompts.neighbor_counts (one prompt variant each)")
    parser.add_argument("--samples", type=int, default=2, help="vlm.samples_per_variant")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--sequential-images", type=int, default=12, help="images for the one-at-a-time runs")
    parser.add_argument("--rounds", type=int, default=2, help="repeat A-E; the best of each is compared")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="vlm.temperature; 0 makes replies (and so token counts) repeat across A, B, E")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads in this process")
    parser.add_argument("--base-url", help="use this running OpenAI-compatible server instead of starting one")
    parser.add_argument("--model", default=SERVED_NAME, help="served model name (with --base-url)")
    args = parser.parse_args()

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load}")
    python = os.environ.get("GEOSLEUTH_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        workdir = Path(tmp)
        server = None
        if args.base_url:
            base_url, model = args.base_url, args.model
        else:
            server = _start_server(workdir, python)
            base_url, model = server.base_url, SERVED_NAME
        try:
            config = _config(args, base_url, model, workdir)
            images = _pictures(workdir / "images", args.images)
            few = images[: args.sequential_images]
            in_flight = args.images_in_flight or 2 * args.concurrency
            print(f"{len(images)} images, C = {args.concurrency} requests in flight, "
                  f"{in_flight} images in flight in A, prompt variants {args.variants} "
                  f"x {args.samples} samples, max_tokens {args.max_tokens}, temperature {args.temperature}; "
                  f"best of {args.rounds} rounds")

            def server_cpu() -> float:
                return _process_cpu(server.pid) if server is not None else 0.0

            rates: dict[str, list[float]] = {k: [] for k in "ABCDE"}
            per_image: list[list[dict[str, Any]]] = []
            for round_index in range(args.rounds):
                load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
                print(f"round {round_index + 1} (load average {load})")
                server0, own0 = server_cpu(), _cpu_seconds()
                elapsed, summary, recorder = asyncio.run(
                    _run_pipeline(config, images, in_flight, workdir / "a.jsonl", record=not per_image)
                )
                rates["A"].append(len(images) / elapsed)
                if recorder is not None:
                    pixels = config.vlm.max_image_pixels
                    per_image = [
                        [_openai_kwargs(r, model, pixels) for r in recorder.requests.get(p.name, [])] for p in images
                    ]
                    n_requests = sum(len(r) for r in per_image)
                    unassigned = len(recorder.requests.get("?", []))
                    print(f"   {summary.ok} ok, {summary.degraded} degraded (no VLM answer), "
                          f"{summary.no_coordinate + summary.errors} failed; {n_requests} VLM "
                          f"requests ({n_requests / len(images):.1f} per image"
                          f"{f', {unassigned} not traced to an image' if unassigned else ''})")
                    if not all(per_image):
                        print("   some images made no VLM request (did the reason step fail?): B, C, E are unfair")
                print(f"   A  geosleuth batch       {rates['A'][-1]:7.2f} images/s  ({elapsed:.1f} s; CPU: pipeline "
                      f"{_cpu_seconds() - own0:.1f} s, server {server_cpu() - server0:.1f} s)")

                server0 = server_cpu()
                elapsed = asyncio.run(_run_direct(per_image, base_url, args.concurrency))
                rates["B"].append(len(images) / elapsed)
                print(f"   B  direct openai client  {rates['B'][-1]:7.2f} images/s  ({elapsed:.1f} s; "
                      f"server CPU {server_cpu() - server0:.1f} s)")

                elapsed = asyncio.run(
                    _run_runner_only(per_image, images, base_url, args.concurrency, workdir / "e.jsonl")
                )
                rates["E"].append(len(images) / elapsed)
                print(f"   E  batch runner only     {rates['E'][-1]:7.2f} images/s  ({elapsed:.1f} s)")

                elapsed = _run_sequential(per_image[: len(few)], base_url)
                rates["C"].append(len(few) / elapsed)
                print(f"   C  sequential, G3-style  {rates['C'][-1]:7.2f} images/s  ({elapsed:.1f} s, {len(few)})")

                elapsed, _, _ = asyncio.run(_run_pipeline(config, few, 1, workdir / "d.jsonl", record=False))
                rates["D"].append(len(few) / elapsed)
                print(f"   D  geosleuth batch, C=1  {rates['D'][-1]:7.2f} images/s  ({elapsed:.1f} s, {len(few)})")

            best = {k: max(v) for k, v in rates.items()}
            print("best of rounds, images/s: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(best.items())))
            print(f"A / B = {best['A'] / best['B']:.2f}  (target >= 0.8)")
            print(f"E / B = {best['E'] / best['B']:.2f}  (the batch runner's own overhead)")
            print(f"A / E = {best['A'] / best['E']:.2f}  (the pipeline's CPU work, on the server's cores)")
            print(f"A / C = {best['A'] / best['C']:.2f}  (vs one request at a time, G3-style)")
            print(f"A / D = {best['A'] / best['D']:.2f}  (C = {args.concurrency} vs 1 in the same pipeline)")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
