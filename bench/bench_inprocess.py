"""In-process VLM throughput: images/s through the reason stage with 8 photos in flight vs 1.

The transformers backend micro-batches concurrent requests (``vlm.max_batch_size``,
``vlm.batch_wait_ms``) on its own worker thread; this measures what that buys on this machine's
CPU with the tiny random LLaVA from ``geosleuth.testing`` (built locally, no download), decoding
under the answer schema (constrained decoding), exactly as ``locate`` runs it. Both runs use the same
photos, prompts and seed, one after the other in one process; the ratio is the figure to read.
Random weights: answer quality means nothing here, and reply lengths are whatever the grammar lets
a random model write (reported).

    python bench/bench_inprocess.py [--images 8] [--in-flight 8] [--variants 0,5] [--max-batch 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="photos per run")
    parser.add_argument("--in-flight", type=int, default=8, help="photos in flight in the concurrent run")
    parser.add_argument("--variants", default="0,5", help="prompts.neighbor_counts (one prompt per count)")
    parser.add_argument("--max-batch", type=int, default=8, help="vlm.max_batch_size")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="vlm.batch_wait_ms")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from PIL import Image

    from geosleuth.agent.reason import reason
    from geosleuth.config import Config
    from geosleuth.geo import ReverseGeocoder
    from geosleuth.prompts.schema import answer_token_budget
    from geosleuth.testing.tiny_vlm import build_tiny_llava
    from geosleuth.types import GPSCandidate, RetrievalResult
    from geosleuth.vlm.transformers_backend import TransformersBackend

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load}")
    model_dir = build_tiny_llava(tempfile.mkdtemp(prefix="tiny-llava-"))
    max_tokens = answer_token_budget(chars_per_token=1.0)
    config = Config.model_validate(
        {
            "vlm": {
                "model": str(model_dir), "device": "cpu", "samples_per_variant": 1, "temperature": 0.7,
                "max_new_tokens": max_tokens, "max_batch_size": args.max_batch, "batch_wait_ms": args.wait_ms,
            },
            "prompts": {"neighbor_counts": [int(v) for v in args.variants.split(",")]},
        }
    )
    backend = TransformersBackend(config.vlm)
    geocoder = ReverseGeocoder()
    retrieval = RetrievalResult(
        gps_candidates=[GPSCandidate(lat=40.0 + i, lon=-3.0 + i, similarity=0.3 - 0.01 * i) for i in range(5)]
    )
    photos = [Image.new("RGB", (128, 96), (30 * i % 255, 90, 200 - 10 * i)) for i in range(args.images)]
    print(
        f"model: tiny random LLaVA ({model_dir}), CPU, float32; {len(config.prompts.neighbor_counts)} prompt "
        f"variants x 1 sample per photo, answers held to the schema, max_new_tokens {max_tokens}; "
        f"max batch {args.max_batch}, batch wait {args.wait_ms:g} ms"
    )

    async def run(in_flight: int) -> tuple[float, list[int], int, int]:
        torch.manual_seed(args.seed)
        gate = asyncio.Semaphore(in_flight)
        tokens: list[int] = []
        valid = 0

        async def one(photo: Image.Image) -> None:
            nonlocal valid
            async with gate:
                result = await reason(photo, retrieval, backend, config, geocoder)
            valid += len(result.hypotheses)
            tokens.extend(len(r) for r in result.raw_replies)

        batches_before = backend.batcher.batches_run
        started = time.perf_counter()
        await asyncio.gather(*(one(photo) for photo in photos))
        return time.perf_counter() - started, tokens, valid, backend.batcher.batches_run - batches_before

    async def both() -> list[tuple[int, float, list[int], int, int]]:
        rows = []
        for in_flight in (1, args.in_flight):
            elapsed, lengths, valid, batches = await run(in_flight)
            rows.append((in_flight, elapsed, lengths, valid, batches))
        await backend.aclose()
        return rows

    rows = asyncio.run(both())
    replies_per_run = args.images * len(config.prompts.neighbor_counts)
    rates = {}
    for in_flight, elapsed, lengths, valid, batches in rows:
        rates[in_flight] = args.images / elapsed
        print(
            f"{in_flight} in flight: {args.images} photos in {elapsed:.2f} s = {rates[in_flight]:.3f} images/s; "
            f"{batches} generate batches; schema-valid replies {valid}/{replies_per_run}; reply length median "
            f"{statistics.median(lengths):.0f} characters"
        )
    print(
        f"ratio: {args.in_flight} in flight / 1 in flight = {rates[args.in_flight] / rates[1]:.2f}x images/s "
        "(measured side by side in this process)"
    )


if __name__ == "__main__":
    main()
