"""In-process VLM backend with Hugging Face transformers: no server needed, CPU or GPU.

The generic path works for image-text-to-text models whose processor has a chat template:
``AutoProcessor`` + ``AutoModelForImageTextToText``, ``processor.apply_chat_template`` with the
images, then ``generate`` with ``num_return_sequences``. Model and processor load once, in the
constructor, from a local directory or the Hugging Face cache (never downloaded here). Generation
runs in a worker thread, one at a time (a lock), so the event loop stays responsive.

This backend cannot force the JSON schema while decoding; the reason stage validates every reply
and re-asks once when it does not fit.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from geosleuth.errors import VLMError
from geosleuth.models import resolve_model
from geosleuth.vlm.backends import VLMRequest, VLMRequestError, downscale_image

if TYPE_CHECKING:
    from geosleuth.config import VLMConfig


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        # float32 on CPU: bfloat16 matmuls are slow on most CPUs; on GPU the checkpoint's own dtype.
        return torch.float32 if device == "cpu" else "auto"
    return getattr(torch, dtype)


class TransformersBackend:
    """A VLM loaded in this process. Construct once (it loads the weights) and share it."""

    def __init__(self, config: VLMConfig, *, model: str | None = None) -> None:
        self.model_id = model or config.model
        self.max_image_pixels = config.max_image_pixels
        self.model_dir = resolve_model(self.model_id)  # ModelNotAvailableError when not on this machine
        self.device = _resolve_device(config.device)
        self._lock = threading.Lock()  # one generate at a time, whichever thread or event loop asks

        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(self.model_dir)
        except Exception as exc:  # transformers raises many types here; all mean "cannot build it"
            raise VLMError(
                f"cannot load the processor of VLM {self.model_id!r} from {self.model_dir}: "
                f"{type(exc).__name__}: {exc}. Some processors (Qwen2-VL, SmolVLM2: video processors) need "
                "a working torchvision; LLaVA-style models do not."
            ) from exc
        if getattr(self.processor, "chat_template", None) is None:
            raise VLMError(
                f"VLM {self.model_id!r} ({self.model_dir}) has no chat template; use an instruction-tuned "
                "checkpoint whose processor ships one"
            )
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_dir, dtype=_resolve_dtype(config.dtype, self.device)
            )
        except (ValueError, KeyError, OSError) as exc:
            raise VLMError(
                f"cannot load VLM {self.model_id!r} from {self.model_dir} as an image-text-to-text model: {exc}"
            ) from exc
        self.model.to(self.device).eval()

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self.model_id!r}, device={self.device!r})"

    async def generate(self, request: VLMRequest) -> list[str]:
        return await asyncio.to_thread(self._generate_locked, request)

    def _conversation(self, request: VLMRequest) -> list[dict[str, Any]]:
        conversation = []
        for message in request.messages:
            content: list[dict[str, Any]] = [
                {"type": "image", "image": downscale_image(img, self.max_image_pixels)} for img in message.images
            ]
            content.append({"type": "text", "text": message.text})
            conversation.append({"role": message.role, "content": content})
        return conversation

    def _generate_locked(self, request: VLMRequest) -> list[str]:
        # The whole call holds the lock: fast tokenizers are not safe to use from two threads at once.
        with self._lock:
            return self._generate(request)

    def _generate(self, request: VLMRequest) -> list[str]:
        import torch

        inputs = self.processor.apply_chat_template(
            self._conversation(request),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        inputs = inputs.to(self.device, dtype=self.model.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        sampling = request.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": sampling}
        if sampling:
            options.update(temperature=request.temperature, num_return_sequences=request.n)
        try:
            with torch.inference_mode():
                output = self.model.generate(**inputs, **options)
        except torch.OutOfMemoryError as exc:
            raise VLMRequestError(
                f"VLM {self.model_id!r} ran out of memory on {self.device} generating {request.n} sample(s) "
                f"of up to {request.max_tokens} tokens; lower vlm.samples_per_variant, vlm.max_new_tokens "
                "or vlm.max_image_pixels"
            ) from exc
        texts = self.processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
        # Greedy decoding has one answer: it is repeated to keep the protocol's "n texts" promise (the
        # reason stage asks for n=1 at temperature 0, so copies never pose as independent samples).
        return [str(t) for t in texts] if sampling else [str(texts[0])] * request.n

    async def aclose(self) -> None:
        # The weights are freed with the object; nothing to close.
        return None
