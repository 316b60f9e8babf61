"""VLM backend for any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp server, hosted APIs).

Images go as base64 JPEG data URLs after downscaling to ``vlm.max_image_pixels``. Replies are forced
into the request's JSON schema with ``response_format={"type": "json_schema", ...}`` (what vLLM's
OpenAI server accepts). Requests with ``tools`` go through the OpenAI tools API (``tools``,
``tool_choice``; vLLM needs ``--enable-auto-tool-choice --tool-call-parser``, which ``geosleuth vlm
serve`` sets) and a server that refuses them raises :class:`ToolsUnsupportedError`. Retries
are ours, not the client's (its ``max_retries`` is 0): connection
errors, timeouts, HTTP 429 and 5xx, and unreadable response bodies are retried up to
``vlm.max_retries`` times with exponential backoff; other 4xx are not. An ``asyncio.Semaphore`` caps
requests in flight at ``vlm.concurrency``. The API key is read from the environment variable named
by ``vlm.api_key_env`` ("EMPTY" when unset) and is never logged or traced.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from geosleuth.errors import VLMError
from geosleuth.vlm.backends import (
    ToolCall,
    ToolsUnsupportedError,
    VLMRejectedError,
    VLMReply,
    VLMRequest,
    VLMUnavailableError,
    downscale_image,
    finish_reason_of,
    image_data_url,
)
from geosleuth.vlm.registry import register_backend

if TYPE_CHECKING:
    from geosleuth.config import VLMConfig

MAX_BACKOFF_S = 8.0


class _RetryableError(Exception):
    """Internal: an attempt failed in a way worth retrying; carries a short description."""


class OpenAIBackend:
    """Chat completions against an OpenAI-compatible server. Create one per process and share it."""

    native_tool_calls = True  # takes VLMRequest.tools (see geosleuth.vlm.tool_calling)

    def __init__(
        self,
        config: VLMConfig,
        *,
        model: str | None = None,
        base_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        self.model_id = model or config.server_model
        self.base_url = base_url or config.base_url
        self.timeout_s = config.timeout_s
        self.max_retries = config.max_retries
        self.concurrency = config.concurrency
        self.max_image_pixels = config.max_image_pixels
        self.backoff_s = backoff_s
        self._api_key_env = config.api_key_env
        env = os.environ if environ is None else environ
        self._api_key = env.get(config.api_key_env) or "EMPTY"
        # The httpx pool and the semaphore belong to one event loop; callers may run several loops
        # one after another (asyncio.run per image), so both are made per loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self.attempts_made = 0  # HTTP attempts over this object's life (tests and `vlm check` read it)

    def __repr__(self) -> str:  # no API key in here, ever
        return f"OpenAIBackend(model={self.model_id!r}, base_url={self.base_url!r})"

    async def _session(self) -> tuple[Any, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                max_retries=0,  # retries are ours (see module docstring)
                timeout=self.timeout_s,
            )
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._loop = loop
            # Closed on the loop it belongs to when that loop shuts down (asyncio.run finalizes open
            # async generators), so a client is never dropped open when the next call runs on a new loop.
            self._closer = _close_when_loop_ends(self._client)
            await self._closer.__anext__()
        assert self._semaphore is not None
        return self._client, self._semaphore

    def _messages(self, request: VLMRequest) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for message in request.messages:
            if message.role == "tool":
                out.append({"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.text})
                continue
            if message.tool_calls:
                out.append({"role": "assistant", "content": message.text or None, "tool_calls": [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.name, "arguments": json.dumps(call.arguments or {})}}
                    for call in message.tool_calls
                ]})
                continue
            if not message.images:
                out.append({"role": message.role, "content": message.text})
                continue
            content: list[dict[str, Any]] = [
                {"type": "image_url", "image_url": {"url": image_data_url(downscale_image(img, self.max_image_pixels))}}
                for img in message.images
            ]
            content.append({"type": "text", "text": message.text})
            out.append({"role": message.role, "content": content})
        return out

    async def generate(self, request: VLMRequest) -> list[VLMReply]:
        messages = await asyncio.to_thread(self._messages, request)  # JPEG encoding is CPU work
        texts: list[VLMReply] = []
        # Some servers (llama.cpp) ignore `n` and return one choice: ask again for the rest.
        for _ in range(request.n):
            texts.extend(await self._complete(messages, request, request.n - len(texts)))
            if len(texts) >= request.n:
                break
        return texts[: request.n]

    async def _complete(self, messages: list[dict[str, Any]], request: VLMRequest, n: int) -> list[VLMReply]:
        import openai

        client, semaphore = await self._session()
        kwargs: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "n": n,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "timeout": self.timeout_s,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": True},
            }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
            # One call per turn (the loop runs one at a time); with vLLM 0.32's hermes parser this is
            # also what makes "required" come back as parsed calls rather than <tool_call> text.
            kwargs["parallel_tool_calls"] = False
            choice = request.tool_choice
            kwargs["tool_choice"] = (
                choice if choice in ("auto", "required", "none") else {"type": "function", "function": {"name": choice}}
            )
        attempts = self.max_retries + 1
        last_error = ""
        for attempt in range(attempts):
            if attempt:
                delay = min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: retries do not stampede
            async with semaphore:
                self.attempts_made += 1
                try:
                    completion = await client.chat.completions.create(**kwargs)
                    return self._texts(completion)
                except openai.APITimeoutError:
                    last_error = f"timed out after {self.timeout_s:g} s"
                except openai.APIConnectionError as exc:
                    last_error = f"connection failed ({_cause(exc)})"
                except openai.APIStatusError as exc:
                    self._raise_if_final(exc)
                    last_error = f"HTTP {exc.status_code}: {_server_message(exc)}"
                except (_RetryableError, ValueError) as exc:  # ValueError: a body that is not JSON
                    last_error = f"unreadable response ({exc})"
        raise VLMUnavailableError(
            f"no answer from the VLM server at {self.base_url} (model {self.model_id!r}) after {attempts} "
            f"attempt(s); last error: {last_error}. Check that the server is running (`geosleuth vlm serve`) "
            "and that vlm.base_url points at it; raise vlm.timeout_s for slow models.",
            attempts=attempts,
        )

    def _raise_if_final(self, exc: Any) -> None:
        """Raise for HTTP errors that retrying cannot fix; return for 429 and 5xx."""
        status = int(exc.status_code)
        if status == 429 or status >= 500:
            return
        detail = _server_message(exc)
        if status == 400 and ("tool-call-parser" in detail or "tool choice" in detail):
            raise ToolsUnsupportedError(
                f"the VLM server at {self.base_url} cannot call tools (HTTP 400: {detail}); start it with "
                "`geosleuth vlm serve` (it adds --enable-auto-tool-choice --tool-call-parser) "
                "or use agent.mode=pipeline",
                status_code=status,
            )
        if status in (401, 403):
            raise VLMError(
                f"the VLM server at {self.base_url} refused the API key (HTTP {status}: {detail}); put the key "
                f"in the environment variable {self._api_key_env} (the name is set by vlm.api_key_env)"
            )
        if status == 404:
            raise VLMError(
                f"the VLM server at {self.base_url} does not serve model {self.model_id!r} (HTTP 404: {detail}); "
                "set vlm.server_model to a name listed by the server's /v1/models, or check vlm.base_url"
            )
        raise VLMRejectedError(
            f"the VLM server at {self.base_url} rejected the request (HTTP {status}): {detail}", status_code=status
        )

    @staticmethod
    def _texts(completion: Any) -> list[VLMReply]:
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _RetryableError(f"the response has no choices (got {type(completion).__name__})")
        ordered = sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)
        # The server counts tokens for the whole response: exact per reply only when there is one.
        usage = getattr(getattr(completion, "usage", None), "completion_tokens", None)
        tokens = usage if isinstance(usage, int) and len(ordered) == 1 else None
        texts = []
        for choice in ordered:
            message = getattr(choice, "message", None)
            content = getattr(message, "content", None)
            finish = getattr(choice, "finish_reason", None)
            calls = tuple(_tool_call(call) for call in (getattr(message, "tool_calls", None) or []))
            texts.append(
                VLMReply(
                    text=content if isinstance(content, str) else "",
                    # "tool_calls": the model ended its turn with calls (a complete reply)
                    finish_reason=finish_reason_of("stop" if finish == "tool_calls" else finish),
                    tokens=tokens,
                    tool_calls=calls,
                )
            )
        return texts

    async def aclose(self) -> None:
        client, self._client = self._client, None
        closer, self._closer = self._closer, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()
            if closer is not None:
                await closer.aclose()


async def _close_when_loop_ends(client: Any) -> AsyncGenerator[None, None]:
    """Suspended until its loop finalizes it (``loop.shutdown_asyncgens``), then closes ``client``."""
    try:
        yield
    finally:
        if not client.is_closed():
            await client.close()


@register_backend("openai")
def _create(config: VLMConfig) -> OpenAIBackend:
    return OpenAIBackend(config)


def _tool_call(call: Any) -> ToolCall:
    """One OpenAI tool call as ours; arguments None when they are not a JSON object."""
    function = getattr(call, "function", None)
    raw = str(getattr(function, "arguments", "") or "")
    try:
        arguments = json.loads(raw, strict=False)  # xgrammar may emit raw control characters inside strings
    except json.JSONDecodeError:
        arguments = None
    return ToolCall(
        name=str(getattr(function, "name", "") or ""),
        arguments=arguments if isinstance(arguments, dict) else None,
        raw=raw,
        id=str(getattr(call, "id", "") or ""),
    )


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("message")
        if message:
            return str(message)[:500]
    return str(getattr(exc, "message", exc))[:500]
