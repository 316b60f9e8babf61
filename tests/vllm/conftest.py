"""Fixtures for integration tests against a real vLLM OpenAI server on CPU.

vLLM lives in its own venv (scripts/build_vllm_cpu_env.sh): its python is taken from
GEOSLEUTH_VLLM_PYTHON, else <repo>/.venv-vllm/bin/python. Without it these tests are skipped with
the reason; with GEOSLEUTH_REQUIRE_VLLM=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from geosleuth.vlm.server import VLLMServer, vllm_import_error

REPO = Path(__file__).resolve().parents[2]
TINY_BUILDER = REPO / "geosleuth" / "testing" / "tiny_qwen_vl.py"
SERVED_NAME = "tiny-qwen2.5-vl"
BUILD_HINT = "run `bash scripts/build_vllm_cpu_env.sh .venv-vllm` (docs/vllm-cpu.md)"

# The tiny model's flags: float32 (no bf16 kernels needed), eager mode (no torch.compile warm-up),
# a 1 GiB KV cache, and no hub access.
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def _unavailable(reason: str) -> None:
    if os.environ.get("GEOSLEUTH_REQUIRE_VLLM") == "1":
        pytest.fail(f"GEOSLEUTH_REQUIRE_VLLM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The python of the vLLM CPU venv; skips (or fails, see module doc) when it is unusable."""
    configured = os.environ.get("GEOSLEUTH_VLLM_PYTHON")
    python = Path(configured) if configured else REPO / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        where = "GEOSLEUTH_VLLM_PYTHON" if configured else "the default location"
        _unavailable(f"no vLLM python at {python} ({where}); {BUILD_HINT}")
    error = vllm_import_error(python)
    if error is not None:
        _unavailable(f"vLLM is not usable: {error}; {BUILD_HINT}")
    return str(python)


@pytest.fixture(scope="session")
def tiny_qwen_vl_dir(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL, written by the vLLM venv's transformers (so vLLM can load it)."""
    out = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    proc = subprocess.run(
        [vllm_python, str(TINY_BUILDER), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        pytest.fail(f"building the tiny Qwen2.5-VL failed:\n{proc.stderr[-3000:]}", pytrace=False)
    return out


class RunningVLLM:
    """The session's vLLM server: ``base_url``, ``model`` (served name) and the launcher itself.

    A test may stop the server; the next use of ``server`` or ``base_url`` starts it again.
    """

    def __init__(self, server: VLLMServer) -> None:
        self._server = server
        self.model = server.served_model_name

    @property
    def server(self) -> VLLMServer:
        if not self._server.is_running():
            self._server.start()
        return self._server

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="session")
def vllm_server(
    vllm_python: str, tiny_qwen_vl_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningVLLM]:
    """One vLLM server for the whole session, serving the tiny Qwen2.5-VL on 127.0.0.1."""
    server = VLLMServer(
        tiny_qwen_vl_dir,
        python=vllm_python,
        host="127.0.0.1",
        port=0,
        served_model_name=SERVED_NAME,
        max_model_len=4096,
        images_per_prompt=1,
        dtype="float32",
        extra_args=["--enforce-eager", "--seed", "0"],
        env=SERVER_ENV,
        startup_timeout=300,
        log_path=tmp_path_factory.mktemp("vllm-log") / "vllm-server.log",
    )
    server.start()
    try:
        yield RunningVLLM(server)
    finally:
        server.stop()
