"""The optional in-process vLLM engine backend fails clearly where vLLM is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from geosleuth.errors import ConfigError, VLMError
from geosleuth.vlm.registry import create_backend


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_engine_without_vllm_is_a_clear_error(make_config) -> None:
    from geosleuth.vlm.vllm_engine import VLLMEngineBackend  # importable without vLLM

    with pytest.raises(VLMError, match="vLLM, which is not installed") as info:
        VLLMEngineBackend(make_config().vlm)
    assert "vlm.backend=openai" in str(info.value)


def test_backend_none_is_a_config_error(make_config) -> None:
    with pytest.raises(ConfigError, match="'none'"):
        create_backend(make_config(**{"vlm.backend": "none"}).vlm)
