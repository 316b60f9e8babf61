"""Encode a shared image and prompt prefix once for every row of a batch (transformers backend).

The prompt variants of one photo (and the samples of one prompt) start with the same tokens: the
chat header, the image and the question; only the retrieved context that follows differs. When
every row of a batch has the same image and at least :data:`MIN_SHARED_TOKENS` leading tokens in
common, the vision tower and the prefill of that prefix run once, on one row; the key/value cache is
then repeated for every row, and ``generate`` continues from it with each row's own suffix
(padding sits between prefix and suffix; position ids follow the attention mask, so every row sees
the same positions it would see alone).

Only for LLaVA-style models, whose image inputs are plain ``pixel_values`` and whose positions are
1-D; other models (Qwen2-VL's 3-D rotary positions, image grids) take the plain batched path.
"""

from __future__ import annotations

from typing import Any

MIN_SHARED_TOKENS = 32
SUPPORTED_MODEL_TYPES = ("llava",)


def shared_prefix_inputs(model: Any, inputs: Any, pad_token_id: int) -> tuple[dict[str, Any], int] | None:
    """``generate`` keyword arguments that start from an encoded shared prefix, and the length of
    the prompt part of ``generate``'s output; None when the batch does not qualify.

    ``inputs``: the processor's left-padded batch (``input_ids``, ``attention_mask``, ``pixel_values``).
    """
    import torch

    if getattr(model.config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return None
    keys = set(inputs.keys())
    if keys - {"input_ids", "attention_mask", "pixel_values"} or "pixel_values" not in keys:
        return None
    ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
    rows = ids.shape[0]
    if rows < 2 or pixels.shape[0] != rows or not all(torch.equal(pixels[0], pixels[i]) for i in range(1, rows)):
        return None
    prompts = [ids[i][mask[i].bool()] for i in range(rows)]
    shared = min(len(p) for p in prompts) - 1  # every row keeps at least one token of its own
    for prompt in prompts[1:]:
        differs = (prompt[:shared] != prompts[0][:shared]).nonzero()
        if len(differs):
            shared = int(differs[0])
    image_token = model.config.image_token_id
    if shared < MIN_SHARED_TOKENS or any(bool((p[shared:] == image_token).any()) for p in prompts):
        return None  # too little in common, or an image outside the shared part
    prefix = prompts[0][:shared].unsqueeze(0)
    with torch.inference_mode():
        encoded = model(
            input_ids=prefix, attention_mask=torch.ones_like(prefix), pixel_values=pixels[:1], use_cache=True
        )
    cache = getattr(encoded, "cache", None) or encoded.past_key_values
    cache.batch_repeat_interleave(rows)
    width = max(len(p) for p in prompts) - shared
    batch_ids = torch.full((rows, shared + width), pad_token_id, dtype=ids.dtype, device=ids.device)
    batch_mask = torch.zeros((rows, shared + width), dtype=mask.dtype, device=mask.device)
    for row, prompt in enumerate(prompts):
        suffix = prompt[shared:]
        batch_ids[row, :shared] = prefix[0]
        batch_ids[row, shared + width - len(suffix) :] = suffix
        batch_mask[row, :shared] = 1
        batch_mask[row, shared + width - len(suffix) :] = 1
    return {"input_ids": batch_ids, "attention_mask": batch_mask, _cache_argument(): cache}, shared + width


def _cache_argument() -> str:
    """``generate``'s name for a ready cache: ``cache`` from transformers 5 on, ``past_key_values`` before."""
    import transformers

    return "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"
