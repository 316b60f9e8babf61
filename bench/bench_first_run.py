"""The README's first command on this machine's CPU: `locate examples/kauai.png` with the CPU recipe,
on random-weight models of the real default shapes, timed step by step.

No weights can be downloaded here, so the two models the CPU default loads are built from their
published configurations with random weights (same shapes, so the same compute):

- image encoder: CLIP ViT-L/14 vision tower (openai/clip-vit-large-patch14: hidden 1024, 24 layers,
  16 heads, MLP 4096, patch 14, 224 px, projection 768), whose features feed GeoCLIP's real head;
- VLM: llava-hf/llava-interleave-qwen-0.5b-hf: SigLIP so400m vision tower (hidden 1152, 27 layers,
  16 heads, MLP 4304, patch 14, 384 px: 729 image tokens), a 2-layer GELU projector, and the Qwen1.5
  0.5B language model (hidden 1024, 24 layers, 16 heads, MLP 2816, vocabulary 151,646 in a
  152,000-row embedding tied to the output head).

Assumed, and printed: the tokenizer is a small byte-level BPE trained here (the real Qwen tokenizer
is not reachable), so prompts take more tokens than they would with Qwen's; random weights write
as much as the schema and the token budget allow, so the VLM time is the recipe's worst case.
GeoCLIP's location encoder and 100K GPS gallery are the real shipped ones (its embeddings cached on
the first run). Model files are written once to --work-dir and reused.

    python bench/bench_first_run.py [--work-dir /tmp/geosleuth-first-run] [--image examples/kauai.png]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CLIP_L14_VISION = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "patch_size": 14, "image_size": 224, "projection_dim": 768,
}
SIGLIP_SO400M = {
    "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
    "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14, "image_size": 384,
}
QWEN15_05B = {
    "model_type": "qwen2", "vocab_size": 152000, "hidden_size": 1024, "intermediate_size": 2816,
    "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": True,
}


def build_clip_l14(out: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    if (out / "config.json").is_file():
        return out
    config = CLIPConfig(
        projection_dim=768,
        # The text tower is never loaded (the encoder reads the vision tower only): kept tiny.
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "projection_dim": 768},
        vision_config=CLIP_L14_VISION,
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(out)
    CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(out)
    return out


def build_llava_interleave_05b(out: Path) -> Path:
    import torch
    from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from geosleuth.testing.tiny_vlm import CHAT_TEMPLATE, IM_END, IM_START, IMAGE_TOKEN, PAD_TOKEN, build_tokenizer

    if (out / "config.json").is_file():
        return out
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD_TOKEN, IM_START, IM_END, IMAGE_TOKEN)}
    text = {**QWEN15_05B, "bos_token_id": ids[IM_START], "eos_token_id": ids[IM_END], "pad_token_id": ids[PAD_TOKEN]}
    config = LlavaConfig(
        vision_config=SIGLIP_SO400M, text_config=text, image_token_id=ids[IMAGE_TOKEN],
        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[IM_START], eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN]
    )
    model.to(torch.bfloat16).save_pretrained(out)  # half the disk; loaded as float32 on CPU
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": 384, "width": 384}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="full",
        num_additional_image_tokens=0, chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
    )
    processor.save_pretrained(out)
    return out


@dataclass
class CallTiming:
    """One VLM call as the bench saw it: wall and CPU seconds to the first token (vision tower and
    prefill) and to the last, tokens written, and the prompt's text tokens."""

    prompt_text_tokens: int
    images: int
    first_token: tuple[float, float] | None = None  # (wall, cpu) seconds after the call started
    end: tuple[float, float] = (0.0, 0.0)
    tokens: int = 0
    finish: str = ""


class TimedBackend:
    """Bench-only wrapper: the time to the first token, the decoding speed and the tokens of every VLM call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.calls: list[CallTiming] = []

    async def generate(self, request: Any) -> Any:
        texts = " ".join(message.text for message in request.messages)
        timing = CallTiming(
            prompt_text_tokens=len(self.inner.processor.tokenizer(texts)["input_ids"]),
            images=sum(len(message.images) for message in request.messages),
        )
        self.calls.append(timing)
        wall, cpu = time.perf_counter(), time.process_time()
        report = request.on_tokens

        def on_tokens(count: int) -> None:
            if timing.first_token is None and count > 0:
                timing.first_token = (time.perf_counter() - wall, time.process_time() - cpu)
            if report is not None:
                report(count)

        replies = await self.inner.generate(dataclasses.replace(request, on_tokens=on_tokens))
        timing.end = (time.perf_counter() - wall, time.process_time() - cpu)
        timing.tokens = sum(r.tokens or 0 for r in replies)
        timing.finish = ",".join(r.finish_reason for r in replies)
        return replies

    async def aclose(self) -> None:
        await self.inner.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/geosleuth-first-run"))
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "kauai.png")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/geosleuth"), help="GPS-gallery cache")
    parser.add_argument("--vlm-dtype", default="auto", help="vlm.dtype (auto: bfloat16 on CPUs with native bfloat16)")
    args = parser.parse_args()

    import torch

    from geosleuth.agent.graph import LocatePipeline
    from geosleuth.agent.runtime import Resources
    from geosleuth.config import load_config

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load}")
    print("  (wall seconds count other processes' load; CPU seconds are this process's, all threads)")
    started = time.perf_counter()
    clip_dir = build_clip_l14(args.work_dir / "clip-vit-large-patch14-random")
    vlm_dir = build_llava_interleave_05b(args.work_dir / "llava-interleave-qwen-0.5b-random")
    print(f"models ready in {args.work_dir} ({time.perf_counter() - started:.1f} s; built once, then reused)")

    config = load_config(
        overrides=[
            "vlm.recipe=cpu", "vlm.device=cpu", "encoders.device=cpu", f"encoders.image_model={clip_dir}",
            f"vlm.model={vlm_dir}", f"index.cache_dir={args.cache_dir}", f"vlm.dtype={args.vlm_dtype}",
        ],
        environ={},
    )
    print(
        f"recipe: {config.vlm.recipe}: prompts.neighbor_counts {config.prompts.neighbor_counts}, "
        f"{config.vlm.samples_per_variant} sample each, max_new_tokens {config.vlm.max_new_tokens}"
    )
    print(
        "assumed: random weights (answers run until the grammar closes them or max_new_tokens: a worst case); "
        "a small byte-level BPE tokenizer trained here stands in for Qwen's, so prompt text takes more "
        "tokens than with the real one (text tokens printed per call)"
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    resources = Resources.load(config)
    load_s, load_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in resources.load_seconds.items())
    print(f"model load: {load_s:.1f} s wall, {load_cpu:.1f} s CPU ({parts})")
    timed = TimedBackend(resources.backend)
    model = timed.inner.model
    vision = model.config.vision_config
    print(f"VLM: dtype {model.dtype}, attention {model.config._attn_implementation}, "
          f"{(vision.image_size // vision.patch_size) ** 2} image tokens per image")
    resources.backend = timed
    pipeline = LocatePipeline(resources)
    step_cpu: dict[str, float] = {}
    last_cpu = [0.0]

    async def on_step(step: str, event: Any) -> None:
        now = time.process_time()
        step_cpu[step] = now - last_cpu[0]
        last_cpu[0] = now

    async def locate() -> Any:
        try:
            return await pipeline.run(str(args.image), on_step=on_step)
        finally:
            await timed.aclose()

    started = time.perf_counter()
    last_cpu[0] = cpu_started = time.process_time()
    outcome = asyncio.run(locate())
    total, total_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    for event in outcome.trace.events:
        print(f"  {event.step:<9} {event.duration_s:7.2f} s wall {step_cpu.get(event.step, float('nan')):7.2f} s CPU")
    for index, call in enumerate(timed.calls):
        first_wall, first_cpu = call.first_token or (float("nan"), float("nan"))
        decode_wall = call.end[0] - first_wall
        rate = (call.tokens - 1) / decode_wall if call.tokens > 1 and decode_wall > 0 else float("nan")
        print(
            f"    VLM call {index}: prompt {call.prompt_text_tokens} text tokens + {call.images} image(s); "
            f"first token after {first_wall:.2f} s wall / {first_cpu:.2f} s CPU (vision tower + prefill); "
            f"{call.tokens} tokens in {call.end[0]:.2f} s wall / {call.end[1]:.2f} s CPU, "
            f"decoding {rate:.1f} tokens/s; {call.finish}"
        )
    print("    (calls that run in one micro-batch overlap: their times are the batch's)")
    prediction = outcome.prediction
    print(
        f"locate end to end (models loaded): {total:.1f} s wall, {total_cpu:.1f} s CPU; goal <= 60 s; "
        f"model load {load_s:.1f} s, goal <= 30 s"
    )
    print(f"answer (random weights, meaningless): ok={prediction.ok}, sources {prediction.sources_used}")


if __name__ == "__main__":
    main()
