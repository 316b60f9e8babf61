"""Build a tiny, random, deterministic CLIP checkpoint on disk for tests and benchmarks (no network).

The checkpoint is a full ``CLIPModel`` (vision + text towers), laid out like the hub's
``openai/clip-vit-large-patch14``, so the same loading code paths are exercised: our encoders load
its vision side with ``CLIPVisionModelWithProjection``, and geoclip's ``ImageEncoder(clip_path=DIR)``
can load it whole. ``projection_dim`` is 768 because GeoCLIP's shipped image head expects
ViT-L/14's 768-d projected features.

Runnable as a script: ``python -m geosleuth.testing.tiny_clip OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

SEED = 0
IMAGE_SIZE = 32
PATCH_SIZE = 8
VISION_HIDDEN = 32
TEXT_HIDDEN = 32
NUM_LAYERS = 2
NUM_HEADS = 2
PROJECTION_DIM = 768  # what GeoCLIP's image head takes
TEXT_VOCAB_SIZE = 128


def build_tiny_clip(out_dir: str | Path, *, seed: int = SEED, projection_dim: int = PROJECTION_DIM) -> Path:
    """Write a tiny random CLIP model + matching image processor to ``out_dir`` and return it.

    The same ``seed`` gives bit-identical weights files. ``projection_dim`` other than 768 builds a
    model GeoCLIP's head cannot use (to test that refusal).
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        projection_dim=projection_dim,
        text_config={
            "vocab_size": TEXT_VOCAB_SIZE,
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": TEXT_HIDDEN * 2,
            "num_hidden_layers": NUM_LAYERS,
            "num_attention_heads": NUM_HEADS,
            "max_position_embeddings": 16,
            "projection_dim": projection_dim,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": VISION_HIDDEN * 2,
            "num_hidden_layers": NUM_LAYERS,
            "num_attention_heads": NUM_HEADS,
            "projection_dim": projection_dim,
        },
    )
    # fork_rng: seed locally without disturbing the caller's global torch RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(out)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m geosleuth.testing.tiny_clip OUT_DIR", file=sys.stderr)
        return 2
    print(build_tiny_clip(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
