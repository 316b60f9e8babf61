"""Constrained decoding for in-process backends: replies held to the request's JSON schema.

The same grammar engine and options as the vLLM server path (``server.DEFAULT_STRUCTURED_OUTPUTS``):
xgrammar, compact JSON with no free whitespace. With free whitespace a weak model (or a random test
model) fills it until the token limit runs out, so the grammar allows none: separators are exactly
``,`` and ``:``. The schema is the one the reason stage sends (``prompts/schema.py``), and replies go
through the same parser, repair turn and failure records as any other backend's.

:class:`SchemaGrammars` compiles schemas for one tokenizer (once per backend; xgrammar caches the
compiled grammars), :class:`DecodeHook` is the transformers logits processor that masks each row of a
batch with its own grammar (or none) and counts generated tokens for progress reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from geosleuth.errors import VLMError

if TYPE_CHECKING:
    import torch

GRAMMAR_BACKEND = "xgrammar"
# Compact JSON only: no whitespace between tokens (see the module docstring).
JSON_SEPARATORS = (",", ":")


class SchemaGrammars:
    """JSON-schema grammars compiled for one tokenizer.

    ``vocab_size`` is the width of the model's logits (it may exceed the tokenizer's length: padded
    embedding matrices); ``stop_token_ids`` end a reply (the model's end-of-turn tokens).
    """

    def __init__(self, tokenizer: Any, *, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
        try:
            import xgrammar as xgr
        except ImportError as exc:  # a dependency of geosleuth; missing means a broken install
            raise VLMError(
                f"constrained decoding needs xgrammar ({exc}); reinstall geosleuth (`bash scripts/install.sh`)"
            ) from None
        self.vocab_size = vocab_size
        self.stop_token_ids = sorted(set(stop_token_ids))
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_token_ids
        )
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)

    def compile(self, schema: dict[str, Any]) -> Any:
        """The compiled grammar of ``schema`` (xgrammar caches it, keyed by the schema text)."""
        try:
            return self._compiler.compile_json_schema(
                json.dumps(schema),  # key order kept: the schema orders reasoning (clues first)
                any_whitespace=False,
                separators=JSON_SEPARATORS,
                strict_mode=True,
            )
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError subclasses for bad schemas
            raise VLMError(f"cannot compile the answer schema into a grammar: {type(exc).__name__}: {exc}") from None


class DecodeHook:
    """A transformers logits processor: row ``i`` follows ``grammars[i]`` (None = free text).

    ``on_step(active)`` is called after every decoding step with, per row, whether that row is still
    generating (for token counts). Use one hook per ``generate`` call: matchers keep state.
    """

    def __init__(
        self,
        grammars: Sequence[Any | None],
        *,
        vocab_size: int,
        stop_token_ids: Sequence[int],
        on_step: Callable[[list[bool]], None] | None = None,
    ) -> None:
        self._matchers: list[Any | None] = []
        self._bitmask: torch.Tensor | None = None
        if any(g is not None for g in grammars):
            import xgrammar as xgr

            self._matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
            self._bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self._rows = len(grammars)
        self._stop = set(stop_token_ids)
        self._done = [False] * self._rows
        self._on_step = on_step
        self._steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != self._rows:
            raise VLMError(f"decode hook built for {self._rows} rows got {input_ids.shape[0]}; this is a bug")
        if self._steps:
            last = input_ids[:, -1].tolist()
            for row, token in enumerate(last):
                if self._done[row]:
                    continue
                matcher = self._matchers[row] if self._matchers else None
                if matcher is not None and not matcher.accept_token(int(token)):
                    raise VLMError(f"the grammar refused token {token} it allowed one step before; this is a bug")
                if int(token) in self._stop:
                    self._done[row] = True
            if self._on_step is not None:
                self._on_step([not done for done in self._done])
        self._steps += 1
        if self._bitmask is None:
            return scores
        import xgrammar as xgr

        rows = [
            row
            for row, matcher in enumerate(self._matchers)
            if matcher is not None and not self._done[row] and not matcher.is_terminated()
        ]
        if not rows:
            return scores
        for row in rows:
            self._matchers[row].fill_next_token_bitmask(self._bitmask, row)
        # Logits may be wider than the bitmask's vocabulary (padded heads): xgrammar masks the rest.
        device = scores.device
        masked = scores if device.type in ("cpu", "cuda") else scores.to("cpu")
        xgr.apply_token_bitmask_inplace(masked, self._bitmask.to(masked.device), indices=rows)
        return masked if masked.device == device else masked.to(device)
