"""What ran: the source commit, the prompt templates and the clock, as an evaluation run's manifest records them."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

from geosleuth.config import Config


def source_commit() -> tuple[str | None, bool | None]:
    """(commit, has local changes) of the git checkout this package runs from; (None, None) when it
    does not run from one (an installed wheel, or no git)."""
    import geosleuth

    package_dir = Path(geosleuth.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    # The package must be tracked by that repository: an installed copy inside some other checkout
    # (a venv in a project folder) must not report the project's commit.
    if git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None, None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain")
    return commit.strip(), None if status is None else bool(status.strip())


def prompt_records(config: Config) -> list[dict[str, str]]:
    """Id, version and hash of each prompt template a run with ``config`` uses (none without a VLM)."""
    if config.vlm.backend == "none":
        return []
    from geosleuth.agent.reason import REPAIR_TEMPLATE_ID
    from geosleuth.prompts.render import load_template

    records = []
    for template_id in (config.prompts.reasoning_template, REPAIR_TEMPLATE_ID):
        template = load_template(template_id)
        records.append({"id": template.id, "version": template.version, "sha256": template.sha256})
    return records


def utc_now() -> str:
    """The current UTC time, to the second (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
