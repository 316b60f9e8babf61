"""Build a tiny, random, deterministic Qwen2.5-VL checkpoint on disk for tests (no network).

Runnable as a script: ``python geosleuth/testing/tiny_qwen_vl.py OUT_DIR``. It needs only torch,
transformers and tokenizers, because the vLLM test environment's python runs it too; so it imports
nothing from geosleuth. The text attention head size is 32: vLLM's CPU attention refuses 16.
Its output head favours JSON-closing tokens (``_bias_toward_json_closers``), so replies held to a
JSON schema end after a few dozen tokens instead of hundreds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SEED = 0

# Qwen2.5-VL's special tokens, in Qwen's own order (ids 0.. here instead of 151643..).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

TOKENIZER_VOCAB_SIZE = 640  # byte alphabet (256) + special tokens + merges
MODEL_VOCAB_SIZE = 640  # the embedding matrix; >= the tokenizer's length
JSON_CLOSER_BIAS = 5.0  # logit offset for tokens starting with " , } ] (see _bias_toward_json_closers)

TEXT_HIDDEN = 128
TEXT_HEADS = 4  # head size 128 / 4 = 32
TEXT_KV_HEADS = 2
VISION_HIDDEN = 64
VISION_HEADS = 2
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
# Pixel limits of the image processor: at most 64 image tokens per picture, which keeps prompts
# far below a 1024-token context.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 64

# Qwen2-VL's chat template (the one Qwen ships), so OpenAI-style image messages expand to
# <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_PLACES = (
    "Paris France",
    "Tokyo Japan",
    "Nairobi Kenya",
    "Lima Peru",
    "Oslo Norway",
    "Cairo Egypt",
    "Sydney Australia",
    "Toronto Canada",
    "Mumbai India",
    "Berlin Germany",
    "Santiago Chile",
    "Reykjavik Iceland",
    "Hanoi Vietnam",
    "Accra Ghana",
    "Quito Ecuador",
    "Lisbon Portugal",
)
_WORDS = (
    "the photo shows a street with signs in the local script and cars driving on the right",
    "a mountain road with snow, pine trees and a red roof under a grey sky",
    "a beach with palm trees, white sand and turquoise water near the harbour",
    "the license plate is yellow and the bollards are black and white",
    "answer with JSON: country, latitude, longitude and confidence between 0 and 1",
    "Where was this picture taken? Think about the vegetation, the architecture and the language.",
)


def _training_corpus() -> list[str]:
    """A small, fixed text corpus: prose, place names, numbers and JSON answers."""
    lines: list[str] = []
    for i, place in enumerate(_PLACES):
        city, country = place.split()
        lat = round(-60 + 7.3 * i, 4)
        lon = round(-170 + 21.7 * i, 4)
        conf = round(0.05 + 0.06 * i, 2)
        lines.append(f"{city} is a city in {country}. {_WORDS[i % len(_WORDS)]}.")
        lines.append(json.dumps({"country": country, "latitude": lat, "longitude": lon, "confidence": conf}))
        lines.append(f"Latitude {lat}, longitude {lon}; confidence {conf}. 0123456789 -+.,:;!?")
    lines.extend(_WORDS)
    lines.append('{"reasoning": "...", "candidates": [{"lat": 1.5, "lon": -2.25}], "null": null}')
    return lines * 4


def train_byte_level_tokenizer(corpus: list[str], *, special_tokens: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained in memory on ``corpus`` (deterministic).

    The trainer gives ``special_tokens`` the first ids, in order. Shared with ``tiny_vlm`` (this
    module imports nothing from geosleuth, so it can import this one).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tokenizer() -> Any:
    """Train a byte-level BPE tokenizer in memory and wrap it as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = train_byte_level_tokenizer(
        _training_corpus(), special_tokens=SPECIAL_TOKENS, vocab_size=TOKENIZER_VOCAB_SIZE
    )
    for t in SPECIAL_TOKENS:  # the trainer puts special tokens first; check the ids we rely on
        assert tok.token_to_id(t) == SPECIAL_TOKENS.index(t), t
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_config(tokenizer: Any) -> Any:
    """The Qwen2.5-VL config: 2 text layers (hidden 128, head size 32) and 2 vision layers."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = TEXT_HIDDEN // TEXT_HEADS
    # Multimodal RoPE splits head_dim / 2 rotary frequencies over (time, height, width).
    mrope_section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    text_config = {
        "vocab_size": MODEL_VOCAB_SIZE,
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 2 * TEXT_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": TEXT_KV_HEADS,
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": 2,
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": 2 * VISION_HIDDEN,
        "num_heads": VISION_HEADS,
        "in_channels": 3,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "window_size": PATCH_SIZE * MERGE_SIZE * 4,
        "fullatt_block_indexes": [1],
        "out_hidden_size": TEXT_HIDDEN,
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _save_processor(out_dir: Path, tokenizer: Any) -> None:
    """Save the processor (image + video processor, tokenizer, chat template).

    Without torchvision, transformers cannot build Qwen's video processor; then the tokenizer, a
    PIL image processor and the chat template are saved on their own (enough for vLLM's loader and
    for text-only use).
    """
    sizes = {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
    }
    try:
        import torchvision  # noqa: F401
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    except Exception:  # torchvision missing or broken: see the docstring
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        Qwen2VLImageProcessorPil(**sizes).save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
        return
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)


def _bias_toward_json_closers(model: Any, tokenizer: Any, bias: float) -> None:
    """Add about ``bias`` to the logits of tokens that start with a quote, comma or closing bracket.

    A random model picks almost uniformly among the tokens a JSON grammar allows, so it closes a
    string only by chance (hundreds of tokens on average) and overruns any sane ``max_tokens``. With
    this bias, strings and numbers end after a few tokens, as with a trained model. Mechanism: a
    constant feature in hidden dimension 0 of every input embedding survives the two small layers
    and the final norm; column 0 of the output head turns it into a per-token offset, calibrated
    on a fixed text-only input.
    """
    import torch

    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    vocab = tokenizer.get_vocab()
    closers = [i for t, i in vocab.items() if t[:1] in ('"', ",", "}", "]") and i < head.shape[0]]
    with torch.no_grad():
        emb[:, 0] = 1.0
        head[:, 0] = 0.0
        probe = torch.arange(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + 48).unsqueeze(0)
        before = model(input_ids=probe).logits[0, :, closers]
        head[closers, 0] = 1.0
        unit = (model(input_ids=probe).logits[0, :, closers] - before).mean().item()
        head[closers, 0] = bias / unit


def build_tiny_qwen2_5_vl(out_dir: Path) -> Path:
    """Write a tiny random Qwen2.5-VL (config, safetensors, tokenizer, processor) to ``out_dir``.

    The same call writes the same weights and tokenizer every time (fixed seed). Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = build_config(tokenizer)
    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    _bias_toward_json_closers(model, tokenizer, JSON_CLOSER_BIAS)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
    )
    model.save_pretrained(out_dir)
    _save_processor(out_dir, tokenizer)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python tiny_qwen_vl.py OUT_DIR", file=sys.stderr)
        return 2
    out = build_tiny_qwen2_5_vl(Path(args[0]))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
