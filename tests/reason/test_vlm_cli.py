"""`geosleuth vlm check` and `geosleuth vlm serve` as a user runs them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from geosleuth.cli import app

runner = CliRunner()


def _openai_args(url: str) -> list[str]:
    return ["--set", "vlm.backend=openai", "--set", f"vlm.base_url={url}", "--set", "vlm.max_retries=0"]


def test_check_reports_latency_and_parsed_output(doubles, fake_server, tmp_path: Path) -> None:
    fake_server.script = [doubles.Reply(body=doubles.completion_body(doubles.answer_json(), "nonsense"))]
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 60), (200, 100, 50)).save(photo)
    args = [*_openai_args(fake_server.url), "vlm", "check", "--image", str(photo), "--samples", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # one of two samples did not parse
    assert "request latency" in result.output
    assert "structured output parsed: 1/2" in result.output
    assert "48.8566" in result.output
    body = fake_server.requests[0]["json"]
    assert body["n"] == 2 and body["response_format"]["json_schema"]["strict"] is True


def test_check_all_parsed_exits_zero(doubles, fake_server) -> None:
    fake_server.script = [doubles.Reply(body=doubles.completion_body(doubles.answer_json()))]
    result = runner.invoke(app, [*_openai_args(fake_server.url), "vlm", "check"])
    assert result.exit_code == 0, result.output
    assert "parsed: 1/1" in result.output


def test_check_server_down_is_a_clean_error(closed_port_url) -> None:
    result = runner.invoke(app, [*_openai_args(closed_port_url), "vlm", "check"])
    assert result.exit_code == 2
    assert "no answer from the VLM server" in result.output and "Traceback" not in result.output


def test_check_with_the_in_process_backend(tiny_vlm_dir: Path) -> None:
    result = runner.invoke(
        app,
        ["--set", "vlm.backend=transformers", "--set", f"vlm.model={tiny_vlm_dir}", "--set", "vlm.max_new_tokens=16",
         "vlm", "check"],
    )
    assert result.exit_code == 1, result.output  # random weights: the reply does not parse, and says so
    assert "parsed: 0/1" in result.output and "setup" in result.output


def test_check_missing_model_tells_how_to_get_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--set", "vlm.backend=transformers", "--set", f"vlm.model={tmp_path / 'absent'}", "vlm", "check"]
    )
    assert result.exit_code == 2 and "absent" in result.output


def test_serve_without_vllm_is_a_clean_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["--set", f"serve.python={tmp_path / 'no-python'}", "--set", "serve.port=0", "vlm", "serve",
         "--log", str(tmp_path / "server.log")],
    )
    assert result.exit_code == 2, result.output
    assert "no-python" in result.output and "Traceback" not in result.output
