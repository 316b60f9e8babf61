"""`geosleuth chat`: locate, follow-up questions and hints from (piped) stdin, resumable sessions.

Runs the real pipeline and session store with tiny random models: the VLM's words are nonsense,
but the loop, the hint handling and the persistence are real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from geosleuth.cli import app

runner = CliRunner()


def test_chat_answers_questions_applies_hints_and_can_be_resumed(tiny_config: Path, folder: Path):
    dialogue = "why not Spain?\nit is in South America\n/hints\n/quit\nthis line is never read\n"
    result = runner.invoke(app, ["--config", str(tiny_config), "chat", str(folder / "porto.jpg")],
                           input=dialogue)
    assert result.exit_code == 0, result.output
    out = result.stdout
    session_id = re.search(r"session (\w+)\s+\(resume later: geosleuth chat --resume \1\)", out).group(1)

    first_answer = out.index("EXIF GPS 41.1496°N, 8.6110°W")  # the opening prediction, with EXIF beside it
    question = out.index("you> why not Spain?")
    reply = out.index("geosleuth> ", question)  # the VLM's (random) answer to the question
    hint = out.index("you> it is in South America")
    relocated = out.index("hints: in South America", hint)
    assert first_answer < question < reply < hint < relocated
    after_hint = out[relocated:out.index("you> /hints")]
    assert "South America > " in after_hint  # the new answer lies inside the hint
    assert "this line is never read" not in out
    assert f"session {session_id} saved; resume with geosleuth chat --resume {session_id}" in out

    resumed = runner.invoke(app, ["--config", str(tiny_config), "chat", "--resume", session_id],
                            input="/where\n")
    assert resumed.exit_code == 0, resumed.output
    assert re.search(rf"resumed session {session_id} \(\d+ earlier turns\)", resumed.stdout)
    assert "hints: in South America" in resumed.stdout  # the session's hints came back with it
    assert "South America > " in resumed.stdout


def test_end_of_input_ends_the_chat_cleanly(tiny_config: Path, folder: Path):
    result = runner.invoke(app, ["--config", str(tiny_config), "chat", str(folder / "b.png")], input="")
    assert result.exit_code == 0, result.output
    assert "saved; resume with geosleuth chat --resume" in result.stdout


def test_chat_needs_an_image_or_a_session(tiny_config: Path):
    result = runner.invoke(app, ["--config", str(tiny_config), "chat"])
    assert result.exit_code == 2
    assert "--resume" in result.output


def test_resuming_an_unknown_session_says_so(tiny_config: Path):
    result = runner.invoke(app, ["--config", str(tiny_config), "chat", "--resume", "no-such-session"])
    assert result.exit_code == 2
    assert "no chat session 'no-such-session'" in result.output


def _console_script() -> Path:
    """The installed `geosleuth` command (the [project.scripts] entry point)."""
    import sysconfig

    script = Path(sysconfig.get_path("scripts")) / "geosleuth"
    assert script.is_file(), f"the geosleuth command is not installed next to {sys.executable}"
    return script


def test_chat_through_the_installed_command_across_processes(tiny_config: Path, folder: Path, tmp_path: Path):
    env = {**os.environ, "COLUMNS": "200", "GEOSLEUTH_CONFIG": str(tiny_config)}
    first = subprocess.run(
        [str(_console_script()), "chat", str(folder / "porto.jpg")],
        input="what do you see?\nit is in Africa\n/quit\n", capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=300,
    )
    assert first.returncode == 0, first.stderr
    session_id = re.search(r"session (\w+) saved; resume with geosleuth chat --resume \1", first.stdout).group(1)
    assert "you> what do you see?" in first.stdout and "geosleuth> " in first.stdout
    assert "hints: in Africa" in first.stdout
    relocated = first.stdout[first.stdout.index("hints: in Africa"):]
    assert "Africa > " in relocated  # the new answer lies inside the hint

    second = subprocess.run(
        [str(_console_script()), "chat", "--resume", session_id], input="/hints\n", capture_output=True, text=True,
        env=env, cwd=tmp_path, timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert re.search(rf"resumed session {session_id} \(3 earlier turns\)", second.stdout)
    assert second.stdout.count("hints: in Africa") == 2  # shown on resuming, and by /hints
