"""Optional backend: vLLM's in-process engine (``vllm.LLM``) for offline batch runs on a GPU.

Needs vLLM in this environment; without it the constructor raises a clear :class:`VLMError`
instead of an ImportError. Replies are forced into the JSON schema by vLLM's structured outputs.
For most uses a server (``geosleuth vlm serve`` + the openai backend) is simpler and batches
concurrent requests just as well.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from geosleuth.errors import VLMError
from geosleuth.models import resolve_model
from geosleuth.vlm.backends import VLMRequest, downscale_image

if TYPE_CHECKING:
    from geosleuth.config import VLMConfig


class VLLMEngineBackend:
    """``vllm.LLM`` loaded once; ``engine_options`` go to its constructor (e.g. gpu_memory_utilization)."""

    def __init__(self, config: VLMConfig, *, model: str | None = None, **engine_options: Any) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise VLMError(
                "the vllm in-process backend needs vLLM, which is not installed in this environment "
                f"({exc}); install it on a GPU machine (`pip install vllm`), or use vlm.backend=openai "
                "with a server (`geosleuth vlm serve`), or vlm.backend=transformers"
            ) from None
        self.model_id = model or config.server_model
        self.max_image_pixels = config.max_image_pixels
        model_dir = resolve_model(self.model_id)
        options: dict[str, Any] = {"limit_mm_per_prompt": {"image": 1}, "dtype": config.dtype}
        options.update(engine_options)
        self._vllm = vllm
        self._llm = vllm.LLM(model=str(model_dir), served_model_name=self.model_id, **options)
        self._lock = threading.Lock()  # vllm.LLM is not safe to call from two threads at once

    async def generate(self, request: VLMRequest) -> list[str]:
        return await asyncio.to_thread(self._generate_locked, request)

    def _generate_locked(self, request: VLMRequest) -> list[str]:
        from vllm.sampling_params import StructuredOutputsParams

        messages = []
        for message in request.messages:
            content: list[dict[str, Any]] = [
                {"type": "image_pil", "image_pil": downscale_image(img, self.max_image_pixels)}
                for img in message.images
            ]
            content.append({"type": "text", "text": message.text})
            messages.append({"role": message.role, "content": content})
        params = self._vllm.SamplingParams(
            n=request.n,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            structured_outputs=(
                StructuredOutputsParams(json=request.json_schema) if request.json_schema is not None else None
            ),
        )
        with self._lock:
            outputs = self._llm.chat(messages, params, use_tqdm=False)
        return [completion.text for completion in outputs[0].outputs]

    async def aclose(self) -> None:
        return None
