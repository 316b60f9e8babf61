"""Run vLLM's OpenAI-compatible server as a child process and wait until it answers.

    with VLLMServer("Qwen/Qwen2.5-VL-7B-Instruct", max_model_len=8192) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")

The server runs in its own process group (vLLM forks an engine core and workers), so ``stop()``
ends all of it. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from geosleuth.errors import VLMError
from geosleuth.vlm.constrained import GRAMMAR_BACKEND

DEFAULT_STRUCTURED_OUTPUTS: Mapping[str, Any] = {"backend": GRAMMAR_BACKEND, "disable_any_whitespace": True}
"""xgrammar, and no free whitespace between JSON tokens: a weak model otherwise fills the allowed
whitespace until ``max_tokens`` runs out."""

_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
_BUILD_HINT = "build the CPU test environment with `bash scripts/build_vllm_cpu_env.sh .venv-vllm`"


# vLLM's --tool-call-parser per model family (vLLM docs, "Tool Calling"): Qwen2.5 and Qwen2.5-VL
# emit Hermes-style <tool_call> JSON; first match wins.
_TOOL_CALL_PARSERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("qwen3-coder",), "qwen3_xml"),
    (("qwen",), "hermes"),
    (("hermes",), "hermes"),
    (("llama-3", "llama3"), "llama3_json"),
    (("mistral", "mixtral"), "mistral"),
)


def tool_call_parser_for(model: str, setting: str = "auto") -> str | None:
    """The ``--tool-call-parser`` to serve ``model`` with: ``setting`` itself unless it is "auto"
    (by the model family; None for a family we know no parser for) or "none" (no tool calling)."""
    if setting.strip().lower() == "none":
        return None
    if setting.strip().lower() != "auto":
        return setting.strip()
    name = model.lower()
    for markers, parser in _TOOL_CALL_PARSERS:
        if any(marker in name for marker in markers):
            return parser
    return None


class VLLMServerError(VLMError):
    """The vLLM server could not be started, or died, or did not become healthy in time."""


def vllm_import_error(python: str | os.PathLike[str], timeout: float = 180.0) -> str | None:
    """Why ``python`` cannot import vLLM's OpenAI server module, or None when it can."""
    exe = str(python)
    if not Path(exe).exists():
        return f"python executable {exe!r} does not exist"
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    try:
        proc = subprocess.run(
            [exe, "-c", f"import {_SERVER_MODULE}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{exe} -c 'import {_SERVER_MODULE}' failed: {exc}"
    if proc.returncode == 0:
        return None
    last = [line for line in proc.stderr.strip().splitlines() if line.strip()][-3:]
    return f"{exe} cannot import {_SERVER_MODULE}: " + " | ".join(last)


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class VLLMServer:
    """vLLM's OpenAI-compatible server as a child process; a context manager.

    ``port=0`` picks a free port. ``structured_outputs=None`` leaves vLLM's own default.
    ``tool_call_parser`` (e.g. "hermes") turns on tool calling (``--enable-auto-tool-choice``).
    ``min_pixels``/``max_pixels`` bound each image's size (Qwen-VL processors) via
    ``--mm-processor-kwargs``. ``env`` is added to this process's environment; when ``model`` is a
    local directory, ``HF_HUB_OFFLINE=1`` is set unless ``env`` says otherwise.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        python: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        served_model_name: str | None = None,
        max_model_len: int | None = None,
        images_per_prompt: int | None = 1,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        mm_processor_kwargs: Mapping[str, Any] | None = None,
        dtype: str = "auto",
        structured_outputs: Mapping[str, Any] | None = DEFAULT_STRUCTURED_OUTPUTS,
        extra_args: Sequence[str] = (),
        tool_call_parser: str | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 600.0,
        stop_timeout: float = 15.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = str(model)
        self.python = str(python) if python is not None else sys.executable
        self.host = host
        self.port = port
        self.served_model_name = served_model_name or self.model
        self.max_model_len = max_model_len
        self.images_per_prompt = images_per_prompt
        self.mm_processor_kwargs: dict[str, Any] = dict(mm_processor_kwargs or {})
        if min_pixels is not None:
            self.mm_processor_kwargs["min_pixels"] = min_pixels
        if max_pixels is not None:
            self.mm_processor_kwargs["max_pixels"] = max_pixels
        self.dtype = dtype
        self.structured_outputs = dict(structured_outputs) if structured_outputs is not None else None
        self.extra_args = list(extra_args)
        self.tool_call_parser = tool_call_parser
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # ----------------------------------------------------------------- properties

    @property
    def _client_host(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    @property
    def root_url(self) -> str:
        """``http://host:port`` (no ``/v1``)."""
        return f"http://{self._client_host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://host:port/v1``."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process-group id), or None before ``start()``."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the server's main process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # ----------------------------------------------------------------- command line

    def command(self) -> list[str]:
        """The server's argv (with the port as it is now; ``start()`` fills in a free one)."""
        cmd = [self.python, "-m", _SERVER_MODULE, "--model", self.model]
        cmd += ["--served-model-name", self.served_model_name]
        cmd += ["--host", self.host, "--port", str(self.port), "--dtype", self.dtype]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.images_per_prompt is not None:
            cmd += ["--limit-mm-per-prompt", json.dumps({"image": self.images_per_prompt})]
        if self.mm_processor_kwargs:
            cmd += ["--mm-processor-kwargs", json.dumps(self.mm_processor_kwargs, sort_keys=True)]
        if self.structured_outputs is not None:
            cmd += ["--structured-outputs-config", json.dumps(self.structured_outputs, sort_keys=True)]
        if self.tool_call_parser:
            cmd += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        return cmd + self.extra_args

    def child_env(self) -> dict[str, str]:
        """The environment the server runs with."""
        env = dict(os.environ)
        if Path(self.model).is_dir():
            env["HF_HUB_OFFLINE"] = "1"  # a local model needs no hub; avoid network time-outs
        env.update(self.env)
        return env

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> VLLMServer:
        """Start the server and block until it is healthy; raise VLLMServerError otherwise."""
        if self.is_running():
            return self
        if self.port == 0:
            self.port = find_free_port(self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.child_env(),
                start_new_session=True,  # own process group: stop() can end every vLLM process
            )
        except OSError as exc:
            self._close_log()
            raise VLLMServerError(
                f"cannot run {self.python!r} to start vLLM ({exc}); pass the python of an environment "
                f"that has vLLM, or {_BUILD_HINT}"
            ) from exc
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_healthy(self) -> None:
        assert self._proc is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise VLLMServerError(
                    self._failure_message(f"exited with code {code} after {time.monotonic() - started:.1f} s")
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise VLLMServerError(
                    self._failure_message(f"was not healthy within {self.startup_timeout:.0f} s")
                )
            time.sleep(0.5)

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        with opener.open(self.root_url + path, timeout=timeout) as resp:
            return int(resp.status), resp.read()

    def _healthy(self) -> bool:
        try:
            status, _ = self._get("/health")
            if status != 200:
                return False
            status, body = self._get("/v1/models")
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError):
            return False
        if status != 200:
            return False
        try:
            ids = [m.get("id") for m in json.loads(body).get("data", [])]
        except (ValueError, AttributeError):
            return False
        return self.served_model_name in ids

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log ('' when there is none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        if self._log_file is not None:
            self._log_file.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip("\n")

    def _failure_message(self, what: str) -> str:
        tail = self.log_tail(40)
        if "No module named 'vllm'" in tail or "No module named vllm" in tail:
            todo = f"{self.python} has no vLLM: pass the python of a vLLM environment, or {_BUILD_HINT}"
        else:
            todo = (
                "check the model (a local directory, or a hub id that is cached or downloadable), the "
                "flags in the command, and free memory; the full log is at the path above"
            )
        return (
            f"vLLM server for model {self.model!r} {what}.\n"
            f"command: {' '.join(self.command())}\n"
            f"log: {self.log_path}\n"
            f"what to do: {todo}\n"
            f"--- last lines of the server log ---\n{tail}"
        )

    def stop(self, timeout: float | None = None) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None:
            grace = self.stop_timeout if timeout is None else timeout
            pgid = proc.pid  # start_new_session: the leader's pid is the group id
            deadline = time.monotonic() + grace
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
            while process_group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)  # the leader is gone; its children get the rest of the grace period
            if proc.poll() is None or process_group_members(pgid):
                _signal_group(pgid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"VLLMServer(model={self.model!r}, url={self.root_url!r}, {state})"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    import psutil

    members = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue  # ended (or hidden) between the listing and the question
    return members
