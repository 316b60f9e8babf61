"""The reason stage's own cost: prompt rendering + parsing, and reason() end to end on a backend.

Without --base-url it uses a tiny random LLaVA built locally (the transformers backend: real
processor, chat template and generate path, so the figures are plumbing overhead, not a real
model's speed). With --base-url it talks to a running OpenAI-compatible server (e.g. one started by
`geosleuth vlm serve`) and also measures images per second with several images in flight.

    python bench/bench_reason.py [--images 5] [--base-url http://127.0.0.1:8000/v1 --model NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time


def _picture(seed: int):
    from PIL import Image

    picture = Image.new("RGB", (320, 240), (40 * seed % 255, 120, 200))
    for x in range(320):
        picture.putpixel((x, (x * (seed + 1)) % 240), (250, 250, 250))
    return picture


def _retrieval():
    from geosleuth.types import GalleryNeighbor, GPSCandidate, RetrievalResult

    return RetrievalResult(
        neighbors=[GalleryNeighbor(id=f"g{i}", lat=10 + i, lon=20 + 2 * i, similarity=0.9 - i / 50) for i in range(15)],
        dissimilar=[GalleryNeighbor(id=f"d{i}", lat=-40 + i, lon=170 - i, similarity=0.01) for i in range(5)],
        gps_candidates=[GPSCandidate(lat=11 + i / 3, lon=21 + i / 3, similarity=0.4) for i in range(20)],
    )


def bench_prompts_and_parsing(repeats: int = 200) -> None:
    from geosleuth.prompts.render import load_template, render
    from geosleuth.prompts.schema import answer_skeleton, parse_answer

    template = load_template("geo_reasoning")
    rows = [{"lat": 10.0 + i, "lon": 20.0, "similarity": 0.8, "place": "Europe > France > Paris"} for i in range(15)]
    started = time.perf_counter()
    for _ in range(repeats):
        render(template, neighbors=rows, dissimilar=rows[:5], gps_candidates=rows, answer_format=answer_skeleton())
    render_ms = (time.perf_counter() - started) / repeats * 1000
    reply = (
        '{"clues":[{"observation":"French sign","implication":"France"}],"continent":"Europe","country":"France",'
        '"region":"Ile-de-France","city":"Paris","latitude":48.85,"longitude":2.35,"confidence":0.6}'
    )
    started = time.perf_counter()
    for _ in range(repeats * 10):
        parse_answer(reply)
    parse_us = (time.perf_counter() - started) / (repeats * 10) * 1e6
    print(f"render geo_reasoning with 15 neighbours: {render_ms:.2f} ms; parse_answer: {parse_us:.1f} us")


async def _reason_many(backend, config, geocoder, images: int, in_flight: int) -> list[float]:
    from geosleuth.agent.reason import reason

    gate = asyncio.Semaphore(in_flight)
    retrieval = _retrieval()
    times: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await reason(_picture(i), retrieval, backend, config, geocoder)
            times.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i) for i in range(images)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server; default: tiny in-process VLM")
    parser.add_argument("--model", default=None, help="served model name (with --base-url)")
    parser.add_argument("--in-flight", type=int, default=4, help="images reasoned concurrently (with --base-url)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    from geosleuth.config import Config
    from geosleuth.geo import ReverseGeocoder
    from geosleuth.vlm.registry import create_backend

    bench_prompts_and_parsing()
    geocoder = ReverseGeocoder()
    geocoder.lookup(0.0, 0.0)  # load the KD-tree outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        if args.base_url:
            vlm = {"backend": "openai", "base_url": args.base_url, "server_model": args.model or "default"}
        else:
            from geosleuth.testing.tiny_vlm import build_tiny_llava

            vlm = {"backend": "transformers", "model": str(build_tiny_llava(tmp)), "device": "cpu"}
        vlm["max_new_tokens"] = args.max_new_tokens
        config = Config.model_validate({"vlm": vlm})
        started = time.perf_counter()
        backend = create_backend(config.vlm)
        print(f"backend {config.vlm.backend} ready in {time.perf_counter() - started:.2f} s")
        variants = len(config.prompts.neighbor_counts)
        asyncio.run(_reason_many(backend, config, geocoder, 1, 1))  # warm-up (first generate is slow)
        in_flight = args.in_flight if args.base_url else 1
        started = time.perf_counter()
        times = asyncio.run(_reason_many(backend, config, geocoder, args.images, in_flight))
        wall = time.perf_counter() - started
        print(
            f"reason(): {args.images} images x {variants} variants x {config.vlm.samples_per_variant} samples, "
            f"max_new_tokens {args.max_new_tokens}, {in_flight} in flight: median {statistics.median(times):.2f} s "
            f"per image, {args.images / wall:.2f} images/s"
        )


if __name__ == "__main__":
    main()
