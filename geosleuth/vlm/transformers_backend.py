"""In-process VLM backend with Hugging Face transformers: no server needed, CPU or GPU.

The generic path works for image-text-to-text models whose processor has a chat template:
``AutoProcessor`` + ``AutoModelForImageTextToText``, ``processor.apply_chat_template`` with the
images, then ``generate``. Model and processor load once, in the constructor, from a local
directory or the Hugging Face cache (never downloaded here).

Replies are held to the request's JSON schema while decoding (xgrammar, compact JSON, see
``constrained.py``), as on the vLLM server. Concurrent requests are micro-batched (``microbatch.py``):
up to ``vlm.max_batch_size`` requests that arrive within ``vlm.batch_wait_ms`` of each other run as
one left-padded ``generate`` on the backend's own worker thread, one row per sample.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geosleuth.devices import resolve_device, resolve_dtype
from geosleuth.errors import VLMError
from geosleuth.models import resolve_model
from geosleuth.vlm.backends import VLMReply, VLMRequest, VLMRequestError, downscale_image
from geosleuth.vlm.constrained import DecodeHook, SchemaGrammars
from geosleuth.vlm.microbatch import MicroBatcher
from geosleuth.vlm.prefix_reuse import shared_prefix_inputs
from geosleuth.vlm.registry import register_backend

if TYPE_CHECKING:
    from geosleuth.config import VLMConfig


@dataclass
class _Row:
    """One sample of one request: a row of a batched ``generate``."""

    request: int  # index of its request in the group that runs together
    conversation: list[dict[str, Any]]
    schema: dict[str, Any] | None


class TransformersBackend:
    """A VLM loaded in this process. Construct once (it loads the weights) and share it."""

    def __init__(self, config: VLMConfig, *, model: str | None = None) -> None:
        self.model_id = model or config.model
        self.max_image_pixels = config.max_image_pixels
        self.model_dir = resolve_model(self.model_id)  # ModelNotAvailableError when not on this machine
        self.device = resolve_device(config.device, setting="vlm.device")
        import torch

        # A thread starts with torch's thread count last set anywhere in the process: after any code sets
        # one thread, the batch worker would decode on one core. It takes the loader's count instead.
        self.torch_threads = torch.get_num_threads()

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
                self.model_dir, dtype=resolve_dtype(config.dtype, self.device, memory_bound=True)
            )
        except (ValueError, KeyError, OSError) as exc:
            raise VLMError(
                f"cannot load VLM {self.model_id!r} from {self.model_dir} as an image-text-to-text model: {exc}"
            ) from exc
        self.model.to(self.device).eval()
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # batched generation appends to the right of every row
        self.stop_token_ids = _stop_token_ids(self.model, tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_token_ids[0]
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        # transformers 5 takes processor options in `processor_kwargs` (and warns about bare ones).
        takes_kwargs = "processor_kwargs" in inspect.signature(self.processor.apply_chat_template).parameters
        self._padding: dict[str, Any] = {"processor_kwargs": {"padding": True}} if takes_kwargs else {"padding": True}
        self.prefix_reuse = True  # encode a batch's shared image + prompt start once (prefix_reuse.py)
        self.grammars = SchemaGrammars(tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_token_ids)
        self._batcher: MicroBatcher[VLMRequest, list[VLMReply]] = MicroBatcher(
            self._run_batch,
            max_batch=config.max_batch_size,
            max_wait_s=config.batch_wait_ms / 1000.0,
            name=f"vlm-{self.model_id}",
        )

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self.model_id!r}, device={str(self.device)!r})"

    @property
    def batcher(self) -> MicroBatcher[VLMRequest, list[VLMReply]]:
        """The request queue (benchmarks read its batch counts)."""
        return self._batcher

    async def generate(self, request: VLMRequest) -> list[VLMReply]:
        return await self._batcher.submit(request)

    async def aclose(self) -> None:
        # The worker thread ends; the weights are freed with the object.
        self._batcher.close()

    # ----------------------------------------------------------------- worker thread

    def _conversation(self, request: VLMRequest) -> list[dict[str, Any]]:
        conversation = []
        for message in request.messages:
            content: list[dict[str, Any]] = [
                {"type": "image", "image": downscale_image(img, self.max_image_pixels)} for img in message.images
            ]
            content.append({"type": "text", "text": message.text})
            conversation.append({"role": message.role, "content": content})
        return conversation

    def _run_batch(self, requests: list[VLMRequest]) -> list[list[VLMReply]]:
        """Requests with the same temperature run as one ``generate``; one row per sample."""
        import torch

        if torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        replies: list[list[VLMReply]] = [[] for _ in requests]
        groups: dict[float, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.temperature, []).append(index)
        for temperature, members in groups.items():
            group = [requests[i] for i in members]
            rows: list[_Row] = []
            for local, request in enumerate(group):
                conversation = self._conversation(request)
                # Greedy decoding has one answer: one row, repeated below to keep the "n replies"
                # promise (the reason stage asks for n=1 at temperature 0, so no copy poses as a sample).
                copies = request.n if temperature > 0 else 1
                rows += [_Row(local, conversation, request.json_schema) for _ in range(copies)]
            for row, reply in zip(rows, self._generate_rows(rows, group, temperature), strict=True):
                replies[members[row.request]].append(reply)
            if temperature == 0:
                for index in members:
                    replies[index] = replies[index] * requests[index].n
        return replies

    def _generate_rows(self, rows: list[_Row], requests: list[VLMRequest], temperature: float) -> list[VLMReply]:
        """One reply per row; rows run to the longest token limit, each is cut at its own."""
        import torch

        inputs = self.processor.apply_chat_template(
            [row.conversation for row in rows],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **self._padding,
        )
        inputs = inputs.to(self.device, dtype=self.model.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        shared = shared_prefix_inputs(self.model, inputs, self.pad_token_id) if self.prefix_reuse else None
        if shared is not None:  # the image and common prompt start encoded once for all rows
            inputs, prompt_length = shared
        max_tokens = max(request.max_tokens for request in requests)
        grammars = [self.grammars.compile(row.schema) if row.schema is not None else None for row in rows]
        hook = DecodeHook(
            grammars,
            vocab_size=self.vocab_size,
            stop_token_ids=self.stop_token_ids,
            on_step=_token_reporter(rows, requests) if any(r.on_tokens for r in requests) else None,
        )
        options: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": temperature > 0,
            "logits_processor": [hook],
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.stop_token_ids,
        }
        if temperature > 0:
            options["temperature"] = temperature
        try:
            with torch.inference_mode():
                output = self.model.generate(**inputs, **options)
        except torch.OutOfMemoryError as exc:
            raise VLMRequestError(
                f"VLM {self.model_id!r} ran out of memory on {self.device} generating {len(rows)} sample(s) "
                f"of up to {max_tokens} tokens; lower vlm.max_batch_size, vlm.samples_per_variant, "
                "vlm.max_new_tokens or vlm.max_image_pixels"
            ) from exc
        return [
            self._reply(tokens, requests[row.request].max_tokens)
            for row, tokens in zip(rows, output[:, prompt_length:].tolist(), strict=True)
        ]

    def _reply(self, tokens: Sequence[int], limit: int) -> VLMReply:
        """The text of one row up to its first stop token, and why it ended."""
        stops = set(self.stop_token_ids)
        end = next((i for i, token in enumerate(tokens) if token in stops), None)
        if end is not None and end < limit:
            kept, reason = tokens[:end], "stop"
        else:
            kept, reason = tokens[:limit], "length"
        text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
        return VLMReply(text=str(text), finish_reason=reason, tokens=len(kept) + (reason == "stop"))


def _stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The model's end-of-turn tokens: its generation config's EOS id(s), else the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [int(i) for i in ids if i is not None]
    if not ids:
        raise VLMError("the VLM has no end-of-sequence token (generation config or tokenizer); replies could not stop")
    return ids


def _token_reporter(rows: list[_Row], requests: list[VLMRequest]) -> Any:
    """A DecodeHook ``on_step`` callback: tokens so far per request -> its ``on_tokens``."""
    counts = [0] * len(requests)

    def on_step(active: list[bool]) -> None:
        for row, alive in zip(rows, active, strict=True):
            if alive:
                counts[row.request] += 1
        for index, request in enumerate(requests):
            if request.on_tokens is not None:
                request.on_tokens(counts[index])

    return on_step


@register_backend("transformers")
def _create(config: VLMConfig) -> TransformersBackend:
    return TransformersBackend(config)
