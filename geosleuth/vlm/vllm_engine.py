"""Backend on vLLM's in-process async engine (``AsyncLLM``): vLLM batches concurrent requests itself.

Needs vLLM in this environment; without it the constructor raises a clear :class:`VLMError`
instead of an ImportError. Replies are held to the request's JSON schema by vLLM's structured
outputs with the same grammar options as the server (``server.DEFAULT_STRUCTURED_OUTPUTS``: xgrammar,
no free whitespace). The chat is rendered with the model's own chat template (its Hugging Face
processor) and the images go to vLLM as multi-modal data.

The engine lives on its own event loop in its own thread, so callers on any loop (one per
``asyncio.run``, or a long-lived one) await its results without blocking a worker thread, and the
engine's output handler is never bound to a loop that has ended.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import TYPE_CHECKING, Any

from geosleuth.errors import VLMError
from geosleuth.models import resolve_model
from geosleuth.vlm.backends import VLMReply, VLMRequest, VLMRequestError, downscale_image, finish_reason_of
from geosleuth.vlm.registry import register_backend
from geosleuth.vlm.server import DEFAULT_STRUCTURED_OUTPUTS

if TYPE_CHECKING:
    from geosleuth.config import VLMConfig


class VLLMEngineBackend:
    """``vllm``'s ``AsyncLLM`` loaded once; ``engine_options`` go to ``AsyncEngineArgs`` (e.g.
    ``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``)."""

    def __init__(self, config: VLMConfig, *, model: str | None = None, **engine_options: Any) -> None:
        try:
            import vllm  # noqa: F401 - the check that vLLM is here
        except ImportError as exc:
            raise VLMError(
                "the vllm in-process backend needs vLLM, which is not installed in this environment "
                f"({exc}); install it on a GPU machine (`pip install vllm`), or use vlm.backend=openai "
                "with a server (`geosleuth vlm serve`), or vlm.backend=transformers"
            ) from None
        from transformers import AutoProcessor

        self.model_id = model or config.server_model
        self.max_image_pixels = config.max_image_pixels
        self.model_dir = resolve_model(self.model_id)
        self.processor = AutoProcessor.from_pretrained(self.model_dir)
        options: dict[str, Any] = {
            "model": str(self.model_dir),
            "served_model_name": self.model_id,
            "limit_mm_per_prompt": {"image": 1},
            "dtype": config.dtype,
            "structured_outputs_config": dict(DEFAULT_STRUCTURED_OUTPUTS),
            "disable_log_stats": True,
        }
        options.update(engine_options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        try:
            self._engine = asyncio.run_coroutine_threadsafe(self._start(options), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, options: dict[str, Any]) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        try:
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**options))
        except Exception as exc:  # vLLM raises many types; all mean "no engine"
            raise VLMError(
                f"cannot start vLLM's engine for {self.model_id!r} ({self.model_dir}): {type(exc).__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"VLLMEngineBackend(model={self.model_id!r})"

    async def generate(self, request: VLMRequest) -> list[VLMReply]:
        if self._engine is None or self._loop.is_closed():
            raise VLMError("the vLLM engine backend is closed")
        future = asyncio.run_coroutine_threadsafe(self._generate(request), self._loop)
        return await asyncio.wrap_future(future)

    def _prompt(self, request: VLMRequest) -> dict[str, Any]:
        conversation = []
        images = []
        for message in request.messages:
            content: list[dict[str, Any]] = []
            for image in message.images:
                images.append(downscale_image(image, self.max_image_pixels))
                content.append({"type": "image"})
            content.append({"type": "text", "text": message.text})
            conversation.append({"role": message.role, "content": content})
        text = self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        prompt: dict[str, Any] = {"prompt": text}
        if images:
            prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        return prompt

    async def _generate(self, request: VLMRequest) -> list[VLMReply]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            n=request.n,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            structured_outputs=(
                StructuredOutputsParams(json=request.json_schema) if request.json_schema is not None else None
            ),
        )
        # With n > 1 vLLM may stream each sample's progress in its own output: keep the latest
        # (cumulative) completion per sample index.
        latest: dict[int, Any] = {}
        try:
            async for output in self._engine.generate(self._prompt(request), params, uuid.uuid4().hex):
                for completion in output.outputs:
                    latest[completion.index] = completion
                if request.on_tokens is not None:
                    request.on_tokens(sum(len(c.token_ids) for c in latest.values()))
        except ValueError as exc:  # vLLM refuses a request it cannot serve (e.g. prompt too long)
            raise VLMRequestError(f"vLLM engine refused the request: {exc}") from exc
        return [
            VLMReply(text=c.text, finish_reason=finish_reason_of(c.finish_reason), tokens=len(c.token_ids))
            for _, c in sorted(latest.items())
        ]

    async def aclose(self) -> None:
        if self._loop.is_closed():
            return
        engine, self._engine = self._engine, None
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_shutdown(engine), self._loop))
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()


async def _shutdown(engine: Any) -> None:
    engine.shutdown()


@register_backend("vllm")
def _create(config: VLMConfig) -> VLLMEngineBackend:
    return VLLMEngineBackend(config)
