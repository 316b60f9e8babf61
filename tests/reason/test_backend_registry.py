"""Backends by name: built-ins load on demand, plug-ins register themselves, unknown names are clear errors;
the vLLM launcher finds every process of a server's group."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from geosleuth.config import VLMConfig
from geosleuth.errors import ConfigError
from geosleuth.vlm.backends import VLMBackend, VLMReply, VLMRequest, as_replies
from geosleuth.vlm.registry import backend_names, create_backend, register_backend
from geosleuth.vlm.server import process_group_members


def test_builtin_names_and_a_registered_plugin() -> None:
    assert {"transformers", "openai", "vllm"} <= set(backend_names())

    class EchoBackend:
        model_id = "echo"

        async def generate(self, request: VLMRequest) -> list[VLMReply]:
            return [VLMReply(request.messages[-1].text, "stop")] * request.n

        async def aclose(self) -> None:
            return None

    @register_backend("echo-test")
    def make(config: VLMConfig) -> EchoBackend:
        return EchoBackend()

    backend = create_backend(VLMConfig.model_construct(**{**VLMConfig().model_dump(), "backend": "echo-test"}))
    assert isinstance(backend, VLMBackend) and "echo-test" in backend_names()
    from geosleuth.vlm.backends import ChatMessage

    replies = asyncio.run(backend.generate(VLMRequest([ChatMessage("user", "hi")], n=2)))
    assert [(r.text, r.finish_reason) for r in replies] == [("hi", "stop"), ("hi", "stop")]
    with pytest.raises(ValueError, match="already registered"):
        register_backend("echo-test")(lambda config: EchoBackend())


def test_unknown_backend_names_the_known_ones() -> None:
    config = VLMConfig.model_construct(**{**VLMConfig().model_dump(), "backend": "nope"})
    with pytest.raises(ConfigError, match="'nope' is not known.*openai.*transformers"):
        create_backend(config)


def test_openai_backend_is_created_by_name_without_a_server() -> None:
    backend = create_backend(VLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1"))
    assert type(backend).__name__ == "OpenAIBackend" and backend.model_id == VLMConfig().server_model


def test_plain_text_replies_from_older_backends_are_accepted() -> None:
    replies = as_replies(["a", VLMReply("b", "length", 7)])
    assert [(r.text, r.finish_reason, r.cut_off) for r in replies] == [("a", "unknown", False), ("b", "length", True)]


def test_process_group_members_sees_the_whole_group_until_it_ends() -> None:
    # A shell in its own session (group) with one child, as vLLM's server has its engine processes.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
         "'import time; time.sleep(30)']); time.sleep(30)"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while len(members := process_group_members(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.pid in members and len(members) == 2
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while process_group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_group_members(proc.pid) == []
