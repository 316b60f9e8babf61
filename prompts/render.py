"""Versioned prompt templates: load one by id, render it with one function.

A template is a Markdown file in ``prompts/templates/<id>.md`` (or any file path) that starts with
front matter::

    ---
    id: geo_reasoning
    version: 3
    ---
    Jinja2 text ...

Its ``sha256`` is the hash of the whole file, so any edit (text or version) changes what traces
record. Rendering uses Jinja2 with ``StrictUndefined``: a variable the caller did not pass is an
error, never an empty string inside a prompt.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from geosleuth.errors import ConfigError

_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)


class PromptTemplateError(ConfigError):
    """A prompt template is missing, malformed, or needs a variable that was not given."""


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: str
    sha256: str  # of the whole file: front matter + body
    text: str  # the Jinja2 body, front matter removed
    source: str  # where it was read from (for error messages)


def templates_dir() -> Path:
    """The folder holding the shipped templates (package data)."""
    return Path(str(resources.files("geosleuth.prompts") / "templates"))


def available_templates(directory: Path | None = None) -> list[str]:
    folder = directory or templates_dir()
    return sorted(p.stem for p in folder.glob("*.md"))


def parse_template(raw: str, source: str) -> PromptTemplate:
    """Split front matter from body; check it names an id and a version."""
    match = _FRONT_MATTER.match(raw)
    if match is None:
        raise PromptTemplateError(
            f"prompt template {source}: must start with front matter ('---', 'id: ...', 'version: ...', '---')"
        )
    meta: dict[str, str] = {}
    for line in match.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PromptTemplateError(f"prompt template {source}: front matter line {line!r} is not 'key: value'")
        meta[key.strip()] = value.strip()
    for key in ("id", "version"):
        if not meta.get(key):
            raise PromptTemplateError(f"prompt template {source}: front matter has no {key!r}")
    return PromptTemplate(
        id=meta["id"],
        version=meta["version"],
        sha256=hashlib.sha256(raw.encode("utf-8")).hexdigest(),
        text=raw[match.end():],
        source=source,
    )


def load_template(template_id: str, directory: Path | None = None) -> PromptTemplate:
    """Load a template by id from ``directory`` (default: the shipped templates), or from a file path.

    ``template_id`` may be a path to a ``.md`` file (for your own templates); then its front-matter
    id is what traces record.
    """
    if template_id.endswith(".md") or "/" in template_id:
        path = Path(template_id).expanduser()
        if not path.is_file():
            raise PromptTemplateError(f"prompt template file {template_id!r} does not exist")
        return parse_template(path.read_text(encoding="utf-8"), str(path))
    folder = directory or templates_dir()
    if not _ID.match(template_id) or not (folder / f"{template_id}.md").is_file():
        known = ", ".join(available_templates(folder)) or "none"
        raise PromptTemplateError(
            f"unknown prompt template {template_id!r}; available: {known} (or give a path to a .md file)"
        )
    path = folder / f"{template_id}.md"
    template = parse_template(path.read_text(encoding="utf-8"), str(path))
    if template.id != template_id:
        raise PromptTemplateError(
            f"prompt template {path}: front matter says id {template.id!r} but the file is named {template_id!r}"
        )
    return template


def render(template: PromptTemplate, **context: Any) -> str:
    """The template's body rendered with ``context`` (surrounding whitespace stripped)."""
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain-text prompts, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    try:
        return env.from_string(template.text).render(**context).strip()
    except jinja2.UndefinedError as exc:
        raise PromptTemplateError(
            f"prompt template {template.id!r} (version {template.version}, {template.source}) needs a value "
            f"that was not given: {exc.message}"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise PromptTemplateError(
            f"prompt template {template.id!r} ({template.source}) has a syntax error on body line "
            f"{exc.lineno}: {exc.message}"
        ) from None
