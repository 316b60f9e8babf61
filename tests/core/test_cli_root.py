"""The root command: help, version, config show, models list, clean errors."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from geosleuth import __version__
from geosleuth.cli import app

runner = CliRunner()


def test_help_lists_every_sub_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("locate", "batch", "export", "chat", "trace", "index", "eval", "vlm", "models", "config"):
        assert name in result.output, name


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"geosleuth {__version__}"


def test_config_show_prints_effective_settings():
    result = runner.invoke(app, ["--set", "vlm.backend=openai", "config", "show"], env={})
    assert result.exit_code == 0, result.output
    assert 'backend = "openai"' in result.output
    assert "# config hash:" in result.output


def test_bad_override_is_a_clean_error_not_a_traceback():
    result = runner.invoke(app, ["--set", "vlm.backend=bogus", "config", "show"])
    assert result.exit_code == 2
    assert "vlm.backend" in result.output
    assert "Traceback" not in result.output


def test_error_messages_keep_square_brackets(tmp_path):
    missing = tmp_path / "[draft]" / "cfg.toml"
    result = runner.invoke(app, ["--config", str(missing), "config", "show"])
    assert result.exit_code == 2
    assert "[draft]" in result.output


def test_models_list_says_what_is_missing(tmp_path):
    env = {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = runner.invoke(app, ["models", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert "clip-vit-large" in result.output
    assert "shipped" in result.output


def test_console_script_imports_no_heavy_libraries():
    # `geosleuth --help` must stay fast: torch/transformers/faiss load only inside commands.
    code = (
        "import sys; import geosleuth.cli; "
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'langgraph') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
