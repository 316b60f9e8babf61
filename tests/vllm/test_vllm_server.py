"""geosleuth.vlm.server against a real vLLM OpenAI server on CPU (tiny random Qwen2.5-VL), driven
by the official openai client, and against a stand-in server for the launcher's own logic.

One real server serves the whole session (about 20-40 s to start); see conftest.py for how it is
found. The stand-in tests need no vLLM.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from openai import OpenAI
from PIL import Image

from geosleuth.vlm.server import VLLMServer, VLLMServerError, process_group_members

GUESS_SCHEMA = {
    "type": "object",
    "properties": {
        "country": {"type": "string"},
        "latitude": {"type": "number"},
        "longitude": {"type": "number"},
        "confidence": {"type": "number"},
    },
    "required": ["country", "latitude", "longitude", "confidence"],
    "additionalProperties": False,
}


def _png_data_url(size: tuple[int, int] = (160, 120)) -> str:
    img = Image.new("RGB", size, (30, 110, 200))
    for x in range(size[0]):  # some structure, so the picture is not one flat colour
        img.putpixel((x, x * size[1] // size[0]), (250, 250, 250))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", timeout=60, max_retries=0)


def _image_message(text: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _png_data_url()}},
                {"type": "text", "text": text},
            ],
        }
    ]


# A stand-in for `python -m vllm.entrypoints.openai.api_server`: answers /health and /v1/models and
# starts a child process, as vLLM starts its engine. FAKE_MODE: "ok", "exit" (dies at once),
# "no-health" (never healthy), "ignore-term" (server and child ignore SIGTERM, like a stuck worker).
FAKE_SERVER = """
import argparse, http.server, json, os, signal, subprocess, sys, time
p = argparse.ArgumentParser()
p.add_argument("--port", type=int)
p.add_argument("--host")
p.add_argument("--served-model-name")
args, _ = p.parse_known_args()
mode = os.environ.get("FAKE_MODE", "ok")
print("fake vllm starting", " ".join(sys.argv[1:]), flush=True)
if mode == "exit":
    print("ValueError: model directory does not exist", flush=True)
    sys.exit(3)
child = "import time; time.sleep(600)"
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", child])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if mode == "no-health":
            self.send_response(503); self.end_headers(); return
        body = b""
        if self.path == "/v1/models":
            body = json.dumps({"data": [{"id": args.served_model_name}]}).encode()
        self.send_response(200 if self.path in ("/health", "/v1/models") else 404)
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer((args.host, args.port), H).serve_forever()
"""


def _fake_vllm(tmp_path: Path, mode: str, **kwargs) -> VLLMServer:
    pkg = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(textwrap.dedent(FAKE_SERVER))
    env = {"PYTHONPATH": str(tmp_path / "fake"), "FAKE_MODE": mode}
    return VLLMServer(
        "org/some-model", python=sys.executable, env=env, log_path=tmp_path / "server.log", **kwargs
    )


def _assert_group_gone(pgid: int, members: list[int]) -> None:
    deadline = time.monotonic() + 5
    while process_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_group_members(pgid) == []
    for pid in members:  # each one is gone or a zombie waiting to be reaped
        try:
            state = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            continue
        assert state == psutil.STATUS_ZOMBIE, f"process {pid} is still alive (state {state})"


def test_launcher_command_line() -> None:
    server = VLLMServer(
        "/models/qwen",
        python="/venv/bin/python",
        port=8001,
        served_model_name="qwen",
        max_model_len=2048,
        images_per_prompt=2,
        min_pixels=3136,
        max_pixels=200704,
        dtype="float32",
        extra_args=["--enforce-eager"],
    )
    cmd = server.command()
    assert cmd[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert flags["--model"] == "/models/qwen" and flags["--served-model-name"] == "qwen"
    assert flags["--port"] == "8001" and flags["--max-model-len"] == "2048"
    assert json.loads(flags["--limit-mm-per-prompt"]) == {"image": 2}
    assert json.loads(flags["--mm-processor-kwargs"]) == {"min_pixels": 3136, "max_pixels": 200704}
    assert json.loads(flags["--structured-outputs-config"]) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert cmd[-1] == "--enforce-eager"
    assert server.base_url == "http://127.0.0.1:8001/v1"
    assert "--structured-outputs-config" not in VLLMServer("m", structured_outputs=None).command()


def test_launcher_starts_and_stops_whole_group(tmp_path: Path) -> None:
    with _fake_vllm(tmp_path, "ok", served_model_name="fake", startup_timeout=30) as server:
        assert server.port > 0 and server.base_url.endswith(f":{server.port}/v1")
        pgid = server.pid
        assert pgid is not None
        deadline = time.monotonic() + 5
        while len(members := process_group_members(pgid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(members) >= 2, members
    _assert_group_gone(pgid, members)
    assert not server.is_running()


def test_launcher_escalates_to_sigkill(tmp_path: Path) -> None:
    server = _fake_vllm(tmp_path, "ignore-term", startup_timeout=30).start()
    pgid = server.pid
    members = process_group_members(pgid)
    started = time.monotonic()
    server.stop(timeout=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 10, elapsed
    _assert_group_gone(pgid, members)


def test_launcher_reports_early_exit_with_log_tail(tmp_path: Path) -> None:
    server = _fake_vllm(tmp_path, "exit", startup_timeout=30)
    with pytest.raises(VLLMServerError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code 3" in message
    assert "ValueError: model directory does not exist" in message
    assert str(tmp_path / "server.log") in message and "what to do:" in message


def test_launcher_times_out_when_never_healthy(tmp_path: Path) -> None:
    server = _fake_vllm(tmp_path, "no-health", startup_timeout=2)
    started = time.monotonic()
    with pytest.raises(VLLMServerError, match="was not healthy within 2 s"):
        server.start()
    assert time.monotonic() - started < 15
    assert not server.is_running()


@pytest.mark.vllm
def test_missing_model_dir_fails_fast_with_log_tail(vllm_python: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    server = VLLMServer(
        missing,
        python=vllm_python,
        env={"HF_HUB_OFFLINE": "1"},
        startup_timeout=120,
        log_path=tmp_path / "server.log",
    )
    started = time.monotonic()
    with pytest.raises(VLLMServerError) as info:
        server.start()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert elapsed < 60, f"took {elapsed:.0f} s to notice the failure"
    assert "exited with code" in message
    assert "last lines of the server log" in message
    assert str(missing) in message.split("--- last lines of the server log ---", 1)[1]
    assert "what to do:" in message
    assert not server.is_running()


@pytest.mark.vllm
def test_chat_completion_with_image(vllm_server) -> None:
    client = _client(vllm_server.base_url)
    question = "Where was this photo taken?"
    with_image = client.chat.completions.create(
        model=vllm_server.model, messages=_image_message(question), max_tokens=16, temperature=0
    )
    text = with_image.choices[0].message.content
    assert isinstance(text, str) and text
    assert with_image.choices[0].finish_reason in ("stop", "length")
    text_only = client.chat.completions.create(
        model=vllm_server.model, messages=[{"role": "user", "content": question}], max_tokens=1
    )
    # The picture became image tokens in the prompt (not dropped on the way).
    assert with_image.usage.prompt_tokens >= text_only.usage.prompt_tokens + 4


@pytest.mark.vllm
def test_json_schema_samples_parse(vllm_server) -> None:
    client = _client(vllm_server.base_url)
    response = client.chat.completions.create(
        model=vllm_server.model,
        messages=_image_message("Answer with JSON: country, latitude, longitude, confidence."),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "location_guess", "schema": GUESS_SCHEMA, "strict": True},
        },
        n=4,
        temperature=1.0,
        seed=0,
        max_tokens=600,
    )
    assert len(response.choices) == 4
    for choice in response.choices:
        text = choice.message.content
        assert choice.finish_reason == "stop", f"sample ran out of tokens: {text[-200:]!r}"
        # strict=False: a random model puts raw control characters inside strings.
        data = json.loads(text, strict=False)
        assert set(data) == {"country", "latitude", "longitude", "confidence"}
        assert isinstance(data["country"], str)
        for key in ("latitude", "longitude", "confidence"):
            assert isinstance(data[key], (int, float)) and not isinstance(data[key], bool), (key, text)


@pytest.mark.vllm
def test_stop_leaves_no_process_alive(vllm_server) -> None:
    """Runs last in this file: it stops the session server (the fixture restarts it on next use)."""
    server = vllm_server.server
    pgid = server.pid
    assert pgid is not None
    members = process_group_members(pgid)
    # API server, engine core, worker (and multiprocessing's resource tracker).
    assert len(members) >= 3, members
    server.stop()
    _assert_group_gone(pgid, members)
    assert not server.is_running()
