"""The in-process vLLM engine backend (``vlm.backend = "vllm"``, vLLM's AsyncLLM) for real, on CPU.

vLLM lives in its own venv, so a small script runs there against this source tree: concurrent
requests with the answer schema on the tiny random Qwen2.5-VL, from two event loops one after
another; the replies come back here and go through the same parser as every backend's.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from geosleuth.prompts.schema import parse_answer

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
# The installed layout: agent/, index/, eval/, prompts/ are sub-packages of geosleuth.
PACKAGE_DIRS = {"agent": "agent", "index": "index", "eval": "eval", "prompts": "prompts"}

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys


    def main():
        sys.path.insert(0, sys.argv[1])
        from PIL import Image
        from geosleuth.config import VLMConfig
        from geosleuth.prompts.schema import answer_json_schema, answer_token_budget
        from geosleuth.vlm.backends import ChatMessage, VLMRequest
        from geosleuth.vlm.vllm_engine import VLLMEngineBackend

        backend = VLLMEngineBackend(
            VLMConfig(backend="vllm", server_model=sys.argv[2], dtype="float32"),
            enforce_eager=True, max_model_len=4096, seed=0,
        )
        image = Image.new("RGB", (96, 64), (40, 120, 200))
        seen = []

        def request(i):
            return VLMRequest(
                [ChatMessage("user", f"Where was this photo taken? Answer as JSON. #{i}", [image])],
                json_schema=answer_json_schema(), n=2, temperature=1.0,
                max_tokens=answer_token_budget(chars_per_token=1.0), on_tokens=seen.append,
            )

        async def round_(first):
            return await asyncio.gather(*(backend.generate(request(first + i)) for i in range(4)))

        replies = asyncio.run(round_(0)) + asyncio.run(round_(4))  # two event loops, one engine
        asyncio.run(backend.aclose())
        rows = [[{"text": r.text, "finish_reason": r.finish_reason, "tokens": r.tokens} for r in g] for g in replies]
        print("RESULT " + json.dumps({"replies": rows, "max_tokens_seen": max(seen) if seen else 0}))


    if __name__ == "__main__":  # vLLM starts its engine core with multiprocessing's spawn
        main()
    """
)


def _source_tree(root: Path) -> Path:
    """``root/geosleuth`` mirrors the installed package with symlinks (the vLLM venv has no geosleuth)."""
    package = root / "geosleuth"
    package.mkdir(parents=True)
    for entry in (REPO / "geosleuth").iterdir():
        (package / entry.name).symlink_to(entry)
    for name, folder in PACKAGE_DIRS.items():
        (package / name).symlink_to(REPO / folder)
    return root


def test_engine_backend_answers_concurrent_requests_in_the_schema(
    vllm_python: str, tiny_qwen_vl_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "engine.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": ""}
    proc = subprocess.run(
        [vllm_python, str(script), str(_source_tree(tmp_path / "src")), str(tiny_qwen_vl_dir)],
        capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    replies = [reply for group in result["replies"] for reply in group]
    assert len(replies) == 16  # 8 requests x 2 samples, over two event loops
    for reply in replies:
        assert reply["finish_reason"] == "stop", reply
        parse_answer(reply["text"])  # every one schema-valid
    assert result["max_tokens_seen"] > 0  # progress counts arrived while decoding
