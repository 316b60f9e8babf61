"""Build a tiny, random, deterministic LLaVA checkpoint on disk for tests (no network).

The checkpoint has the parts a real in-process VLM has: a CLIP vision tower, a projector, a small
Llama text model (attention head size 32), a byte-level BPE tokenizer trained in memory with the
image token and ChatML-style special tokens, a chat template and a LLaVA processor whose image
processor is PIL-based (no torchvision). Its answers are random text: tests use it to run the real
processor + chat template + generate path, never to judge answer quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geosleuth.testing.tiny_qwen_vl import train_byte_level_tokenizer

SEED = 1234

PAD_TOKEN = "<pad>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, IM_START, IM_END, IMAGE_TOKEN)

TOKENIZER_VOCAB_SIZE = 768  # byte alphabet (256) + special tokens + merges
TEXT_HIDDEN = 64
TEXT_HEADS = 2  # head size 32 (vLLM's CPU attention refuses 16; keep the same shape rules here)
VISION_HIDDEN = 32
IMAGE_SIZE = 32
PATCH_SIZE = 8  # (32 / 8)^2 = 16 image tokens per picture after dropping CLS

# ChatML-style: message content may be a string or a list of {"type": "image"} / {"type": "text"} blocks.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for block in message['content'] %}"
    "{% if block['type'] == 'image' %}<image>\n"
    "{% elif block['type'] == 'text' %}{{ block['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_SENTENCES = (
    "Where was this photo taken? Describe the visible clues first.",
    "The signs are written in Cyrillic script and cars drive on the right side of the road.",
    "Yellow centre lines, white bollards with a red reflector, tiled roofs and pine trees.",
    "Dry terrain, red soil, eucalyptus trees and a low sun in the north suggest the southern hemisphere.",
    "Similar gallery images were taken at these coordinates: latitude, longitude, place.",
    "Europe > France > Ile-de-France > Paris; Asia > Japan > Tokyo; Africa > Kenya > Nairobi.",
    "South America > Brazil > Sao Paulo; North America > United States > California > Los Angeles.",
    "Oceania > Australia > New South Wales > Sydney; Europe > Norway > Oslo.",
)


def _corpus() -> list[str]:
    """A fixed training text: prose about clues, place hierarchies, numbers and JSON answers."""
    lines = list(_CORPUS_SENTENCES)
    for i in range(24):
        answer = {
            "clues": [{"observation": "signs in Latin script", "implication": "Europe or the Americas"}],
            "continent": "Europe",
            "country": "France",
            "region": "Provence",
            "city": None,
            "latitude": round(-60.0 + 5.1 * i, 3),
            "longitude": round(-170.0 + 14.3 * i, 3),
            "confidence": round(0.04 * i, 2),
        }
        lines.append(json.dumps(answer))
        lines.append(f"latitude {answer['latitude']} longitude {answer['longitude']} 0123456789 -+.,:;?!")
    return lines * 3


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained in memory, wrapped as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = train_byte_level_tokenizer(_corpus(), special_tokens=SPECIAL_TOKENS, vocab_size=TOKENIZER_VOCAB_SIZE)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=4096,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_tiny_llava(out_dir: str | Path) -> Path:
    """Write a tiny random LLaVA (config, safetensors, tokenizer, processor) to ``out_dir``.

    The same call writes the same weights and tokenizer every time (fixed seed). Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = len(tokenizer)
    text_config = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 2 * TEXT_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": TEXT_HEADS,
        "head_dim": TEXT_HIDDEN // TEXT_HEADS,
        "max_position_embeddings": 4096,
        "bos_token_id": ids[IM_START],
        "eos_token_id": ids[IM_END],
        "pad_token_id": ids[PAD_TOKEN],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "model_type": "clip_vision_model",
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": 2 * VISION_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "projection_dim": VISION_HIDDEN,
    }
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=ids[IMAGE_TOKEN],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[IM_START], eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN]
    )
    model.save_pretrained(out)

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    processor.save_pretrained(out)
    return out
