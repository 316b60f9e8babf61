"""Where the CPU recipe's VLM time goes, and what the CPU settings buy: side by side in one process.

The default in-process VLM's shapes (llava-interleave-qwen-0.5b, random weights, built once by
``bench_first_run.py``) are timed piece by piece in float32 and in bfloat16 (what ``vlm.dtype = "auto"``
picks on CPUs with native bfloat16), each piece for both back to back:

- the vision tower on one 384 px image (729 image tokens);
- the prefill of a prompt of --prompt-tokens tokens;
- decoding steps of a batch of 2 rows (the CPU recipe's two prompts) over a key/value cache of
  --context tokens (image + prompt), the growing cache the backend uses, after one untimed step. The
  cache is filled with random keys and values instead of a prefill (same shapes, same work per step).

Prints CPU seconds (this process, all threads) and wall seconds of each, and each variant's CPU time
as a ratio of float32's. Other processes' load inflates wall time; the ratios, measured in the same
run, are what to compare. Assumed: random weights (speed does not depend on the values).

    python bench/bench_vlm_cpu_settings.py [--work-dir /tmp/geosleuth-first-run] [--context 2000] [--steps 6]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(run: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def decode_steps(model: Any, dtype: Any, context: int, rows: int, steps: int) -> tuple[float, float]:
    """(CPU, wall) seconds per decoding step of ``rows`` rows over a cache of ``context`` tokens, in
    the steady state: one untimed step first (bfloat16 kernels are set up on their first call)."""
    import torch
    from transformers import DynamicCache

    config = model.config.text_config
    heads, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    cache = DynamicCache(config=config)
    language_model, head = model.model.language_model, model.lm_head
    with torch.inference_mode():
        for layer in range(config.num_hidden_layers):
            keys = torch.randn(rows, heads, context, head_dim, dtype=dtype)
            cache.update(keys, torch.randn_like(keys), layer)
        token = torch.randint(10, 400, (rows, 1))

        def run(count: int, first: int = 0) -> None:
            nonlocal token
            for step in range(first, first + count):
                position = context + step
                out = language_model(
                    input_ids=token, past_key_values=cache, use_cache=True,
                    attention_mask=torch.ones(rows, position + 1, dtype=torch.long),
                    position_ids=torch.full((rows, 1), position),
                )
                token = head(out.last_hidden_state[:, -1:]).argmax(-1)

        run(1)
        cpu, wall = timed(lambda: run(steps, first=1))
    return cpu / steps, wall / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/geosleuth-first-run"))
    parser.add_argument("--context", type=int, default=2000, help="cache length while decoding (image + prompt)")
    parser.add_argument("--prompt-tokens", type=int, default=600)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForImageTextToText

    from geosleuth.devices import cpu_has_native_bfloat16

    # The model builder of the first-run bench (a sibling script, not a package).
    spec = importlib.util.spec_from_file_location("bench_first_run", Path(__file__).with_name("bench_first_run.py"))
    assert spec is not None and spec.loader is not None
    first_run = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = first_run  # its dataclasses look their module up
    spec.loader.exec_module(first_run)
    build_llava_interleave_05b = first_run.build_llava_interleave_05b

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load}; "
          f"native bfloat16: {cpu_has_native_bfloat16()}")
    model_dir = build_llava_interleave_05b(args.work_dir / "llava-interleave-qwen-0.5b-random")
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    # Every variant in memory at once, so each piece is timed for all of them back to back (the
    # machine's load changes less between them than over the whole run).
    variants: dict[str, tuple[Any, Any]] = {
        "float32": (model, torch.float32),
        "bfloat16": (copy.deepcopy(model).to(torch.bfloat16), torch.bfloat16),
    }
    pixels = torch.randn(1, 3, 384, 384)
    prompt = torch.randint(10, 400, (1, args.prompt_tokens))

    def vision(variant: Any, dtype: Any) -> tuple[float, float]:
        typed = pixels.to(dtype)
        with torch.inference_mode():
            return timed(lambda: variant.model.get_image_features(pixel_values=typed))

    def prefill(variant: Any, dtype: Any) -> tuple[float, float]:
        with torch.inference_mode():
            return timed(lambda: variant.model.language_model(input_ids=prompt, use_cache=False))

    pieces: list[tuple[str, Callable[[Any, Any], tuple[float, float]]]] = [
        ("vision tower (1 image)", vision),
        (f"prefill ({args.prompt_tokens} tokens)", prefill),
    ]
    pieces.append((
        f"decode step, 2 rows, {args.context}-token cache",
        lambda variant, dtype: decode_steps(variant, dtype, args.context, 2, args.steps),
    ))
    for label, measure in pieces:
        reference = 0.0
        for name, (variant, dtype) in variants.items():
            cpu, wall = measure(variant, dtype)
            reference = reference or cpu  # float32 comes first
            ratio = cpu / reference
            print(f"{label:<40} {name:9} {cpu:7.2f} s CPU {wall:7.2f} s wall  {ratio:.2f}x float32", flush=True)

if __name__ == "__main__":
    main()
