"""Device recipes: which in-process VLM and how much asking, chosen by the hardware.

One photo on a laptop CPU must answer in about a minute, while a GPU can afford the full G3-style
recipe with a model that can actually geolocate. ``vlm.recipe`` picks one of :data:`RECIPE_NAMES`
(``auto``: by the device ``vlm.device`` resolves to and, on a GPU, its memory; with a server backend
the full recipe, since the server, not this machine, decodes). A recipe only fills
settings the user did not set (file, environment or ``--set``); ``geosleuth config show`` prints the
result and the reason, and traces record the recipe's name.

Why these models (published numbers, see the README): Qwen2.5-VL-7B-Instruct is the server
default and fits a 24 GB GPU in bfloat16 (about 16.6 GB of weights); Qwen2.5-VL-3B-Instruct
(about 7.5 GB) fits 8-16 GB GPUs; on CPU the 0.9B-parameter llava-interleave-qwen-0.5b keeps one
photo near a minute on two cores (``bench/bench_first_run.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from geosleuth.prompts.schema import answer_token_budget

RECIPE_NAMES = ("auto", "cpu", "gpu", "gpu-small")
# Backends whose model runs on a server: ``auto`` then gives the full recipe, as for a GPU.
SERVER_BACKENDS = ("openai",)
SERVER_REASON = "vlm.backend is {backend}: the server decodes, not this machine (set vlm.recipe = cpu for a CPU server)"
# GPUs with less memory than this get the 3B model (7B in bfloat16 needs ~17 GB before activations).
LARGE_GPU_BYTES = 22 * 2**30


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    settings: Mapping[str, Any]  # "section.key" -> value


def _recipes() -> dict[str, Recipe]:
    full = {
        "prompts.neighbor_counts": [0, 5, 10, 15],
        "vlm.samples_per_variant": 2,
        # One token per character: the longest valid answer always fits (cheap on a GPU).
        "vlm.max_new_tokens": answer_token_budget(chars_per_token=1.0),
    }
    return {
        "cpu": Recipe(
            "cpu",
            "light: a small VLM, one zero-shot and one retrieval-informed prompt, one sample each, "
            "a token budget from the answer schema",
            {
                "vlm.model": "llava-hf/llava-interleave-qwen-0.5b-hf",
                "prompts.neighbor_counts": [0, 5],
                "vlm.samples_per_variant": 1,
                "vlm.max_new_tokens": answer_token_budget(),
            },
        ),
        "gpu": Recipe(
            "gpu",
            "full G3 recipe (4 prompt variants x 2 samples) with Qwen2.5-VL-7B-Instruct",
            {"vlm.model": "Qwen/Qwen2.5-VL-7B-Instruct", **full},
        ),
        "gpu-small": Recipe(
            "gpu-small",
            "full G3 recipe with Qwen2.5-VL-3B-Instruct (GPUs under 22 GB)",
            {"vlm.model": "Qwen/Qwen2.5-VL-3B-Instruct", **full},
        ),
    }


def get_recipe(name: str) -> Recipe:
    recipes = _recipes()
    if name not in recipes:
        from geosleuth.errors import ConfigError

        raise ConfigError(f"vlm.recipe {name!r} is not known; use one of {', '.join(RECIPE_NAMES)}")
    return recipes[name]


def detect_recipe(device: str, gpu_memory: Callable[[], int | None] | None = None) -> tuple[str, str]:
    """(recipe name, why) for ``vlm.device`` = ``device``; ``gpu_memory`` returns the GPU's bytes
    (None without a usable GPU); by default torch is asked."""
    if device == "cpu":
        return "cpu", "vlm.device is cpu"
    memory = (gpu_memory or _cuda_memory)()
    if memory is None:
        return "cpu", "no CUDA GPU found"
    gib = memory / 2**30
    if memory >= LARGE_GPU_BYTES:
        return "gpu", f"CUDA GPU with {gib:.0f} GiB"
    return "gpu-small", f"CUDA GPU with {gib:.0f} GiB (< {LARGE_GPU_BYTES / 2**30:.0f} GiB)"


def _cuda_memory() -> int | None:
    from geosleuth.devices import cuda_available

    if not cuda_available():
        return None
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory)


def apply_recipe(
    tree: dict[str, Any], gpu_memory: Callable[[], int | None] | None = None
) -> tuple[str, str]:
    """Fill ``tree`` (a raw configuration: section -> key -> value) with the recipe's settings the
    user left unset, and set ``vlm.recipe`` to the recipe used. Returns (recipe name, why)."""
    vlm = tree.setdefault("vlm", {})
    name = str(vlm.get("recipe", "auto"))
    if name == "auto" and vlm.get("backend") in SERVER_BACKENDS:
        # The server decodes: this machine's device (a laptop, a CPU-only Ray head) says nothing about it.
        name, why = "gpu", SERVER_REASON.format(backend=vlm["backend"])
    elif name == "auto":
        device = str(vlm.get("device", "auto"))
        name, why = detect_recipe("cuda" if device.startswith("cuda") else device, gpu_memory)
    else:
        why = "set by vlm.recipe"
    for dotted, value in get_recipe(name).settings.items():
        section, key = dotted.split(".")
        tree.setdefault(section, {}).setdefault(key, value)
    vlm["recipe"] = name
    return name, why
