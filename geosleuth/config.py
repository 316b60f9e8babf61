"""One typed configuration for the whole pipeline.

Precedence (later wins): built-in defaults < TOML file < environment variables < ``--set`` flags.

- TOML file: ``--config FILE``, else ``$GEOSLEUTH_CONFIG``, else ``./geosleuth.toml`` if present.
- Environment: ``GEOSLEUTH__<SECTION>__<KEY>=value``, e.g. ``GEOSLEUTH__VLM__BACKEND=openai``.
- Flags: ``--set vlm.backend=openai`` (values are parsed as TOML scalars/arrays when they can be).

Secrets never live here: the VLM API key is read from the environment variable named by
``vlm.api_key_env`` at request time and is never written to traces.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geosleuth.errors import ConfigError
from geosleuth.prompts.schema import answer_token_budget

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "GEOSLEUTH__"
DEFAULT_CONFIG_FILE = "geosleuth.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EncoderConfig(_Section):
    image_model: str = Field(
        "openai/clip-vit-large-patch14",
        description="CLIP-family vision model (hub id or local dir); GeoCLIP's head expects ViT-L/14 features",
    )
    image_encoder: str = Field("clip+geoclip", description="registered image encoder name")
    location_encoder: str = Field("geoclip", description="registered location encoder name")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(32, ge=1)


class IndexConfig(_Section):
    gallery: Path | None = Field(
        None, description="image gallery store folder (geosleuth index build); none = GPS gallery + VLM only"
    )
    gps_gallery: str = Field(
        "geoclip", description="'geoclip' (its shipped 100K coordinates), a CSV with lat,lon columns, or 'none'"
    )
    cache_dir: Path = Field(Path("~/.cache/geosleuth"), description="cached GPS-gallery embeddings and sessions")


class RetrievalConfig(_Section):
    k_neighbors: int = Field(
        15, ge=0, description="similar gallery images retrieved (the largest prompt variant uses this many)"
    )
    k_dissimilar: int = Field(5, ge=0, description="far-away gallery images used as negative context")
    k_gps: int = Field(20, ge=0, description="GPS-gallery candidates")
    exclude_authors: list[str] = Field(default_factory=list, description="gallery authors never retrieved")


class VLMConfig(_Section):
    recipe: Literal["auto", "cpu", "gpu", "gpu-small"] = Field(
        "auto",
        description="device recipe (model, prompt variants, samples, token budget) for settings left unset: "
        "auto = by the device (cpu; gpu = Qwen2.5-VL-7B, full recipe; gpu-small = 3B); see geosleuth/recipes.py",
    )
    recipe_reason: str | None = Field(None, description="why that recipe (filled in when the configuration loads)")
    backend: Literal["transformers", "openai", "vllm", "none"] = Field(
        "transformers",
        description="transformers (in-process) | openai (vLLM or any OpenAI-compatible server) | vllm (in-process "
        "vLLM engine, GPU) | none (retrieval only)",
    )
    model: str = Field(
        "llava-hf/llava-interleave-qwen-0.5b-hf",
        description="in-process model (hub id or local dir); the default is a small LLaVA (SigLIP + Qwen 0.5B) "
        "whose processor needs no torchvision, so it runs on CPU-only installs",
    )
    server_model: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="model served by vLLM / the server")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible server URL")
    api_key_env: str = Field("GEOSLEUTH_VLM_API_KEY", description="environment variable holding the server's API key")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    concurrency: int = Field(16, ge=1, description="requests in flight to the server")
    max_image_pixels: int = Field(
        1024 * 1024, ge=64 * 64, description="images are downscaled to at most this many pixels"
    )
    max_new_tokens: int = Field(
        default_factory=lambda: answer_token_budget(chars_per_token=1.0),
        ge=16,
        description="token limit per reply; the recipes derive it from the answer schema (prompts/schema.py)",
    )
    temperature: float = Field(0.7, ge=0.0)
    samples_per_variant: int = Field(2, ge=1)
    device: str = Field("auto", description="in-process backends: auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on GPUs and on CPUs with native bfloat16 (AVX512-BF16, AMX), else float32"
    )
    max_batch_size: int = Field(
        8, ge=1, description="in-process transformers backend: requests decoded together in one batch"
    )
    batch_wait_ms: float = Field(
        10.0, ge=0, description="in-process transformers backend: how long a batch waits for more requests"
    )


class PromptConfig(_Section):
    reasoning_template: str = Field("geo_reasoning", description="template id in prompts/templates")
    neighbor_counts: list[int] = Field(
        default_factory=lambda: [0, 5, 10, 15], description="G3-style diversification: one prompt variant per count"
    )
    include_dissimilar: bool = True
    chat_template: str = "chat_followup"


class TextConfig(_Section):
    ocr: bool = Field(
        True, description="read the text in every photo (RapidOCR, offline) and use the places it names and its "
        "language as evidence"
    )
    min_confidence: float = Field(0.7, ge=0, le=1, description="text lines the recogniser scores lower are dropped")
    gazetteer_min_population: int = Field(
        5000, ge=0, description="places named in the text are looked up among GeoNames places this populous"
    )


class VerifyConfig(_Section):
    w_geoclip: float = Field(1.0, ge=0, description="scales the calibrated weight of GeoCLIP's GPS candidates")
    w_neighbor_support: float = Field(1.0, ge=0, description="scales the calibrated weight of gallery neighbours")
    w_vlm_agreement: float = Field(1.0, ge=0, description="scales the calibrated weight of VLM answers")
    w_text: float = Field(
        1.0, ge=0, description="scales the calibrated weights of the text in the photo (places it names, its language)"
    )
    w_geo_consistency: float = Field(
        0.5, ge=0, description="how much a VLM answer whose stated country contradicts its coordinate is "
        "down-weighted (0 = not at all, 1 = to nothing)"
    )
    support_radius_km: float = Field(200.0, gt=0, description="VLM clues within this distance support the answer")
    refine_radius_km: float = Field(
        25.0, ge=0, description="cluster radius: candidates this close to a cluster's lead are one place, answered "
        "by their mean position; 0 = every distinct coordinate is its own place"
    )
    calibration: Path | None = Field(
        None, description="calibration file from `geosleuth eval calibrate` (source weights + per-level maps); "
        "none = the shipped default (fitted on a simulation, see README)"
    )
    candidate_sources: list[Literal["retrieval", "gps-gallery", "vlm", "user", "ocr"]] = Field(
        default_factory=lambda: ["retrieval", "gps-gallery", "vlm", "user", "ocr"],
        min_length=1,
        description="whose locations may be the answer (retrieval = gallery neighbours); the others still "
        "count as evidence (ablations, e.g. ['vlm'] = pick among the VLM's answers only)",
    )
    top_k: int = Field(5, ge=1, description="ranked alternatives reported")


class AgentConfig(_Section):
    mode: Literal["pipeline", "tools"] = Field(
        "pipeline",
        description="pipeline = the fixed reason step (several prompt variants); tools = the VLM chooses tools "
        "in a bounded loop and submits one answer (not yet shown to score better on a benchmark)",
    )
    max_tool_calls: int = Field(8, ge=1, description="tools mode: tool calls per photo before the loop stops")
    max_tokens: int = Field(
        4096, ge=16, description="tools mode: tokens the VLM may generate per photo, over all its turns"
    )
    max_seconds: float = Field(120.0, gt=0, description="tools mode: wall time per photo before the loop stops")


class ServeConfig(_Section):
    python: str | None = Field(None, description="python with vLLM installed (default: this one)")
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 8192
    images_per_prompt: int = 1
    extra_args: list[str] = Field(default_factory=list)
    startup_timeout_s: float = 900.0
    tool_call_parser: str = Field(
        "auto", description="vLLM --tool-call-parser for agent.mode=tools: auto = by the model family "
        "(Qwen2.5 / Qwen2.5-VL: hermes), none = serve without tool calling"
    )


class Config(_Section):
    encoders: EncoderConfig = Field(default_factory=EncoderConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    vlm: VLMConfig = Field(default_factory=VLMConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    def config_hash(self) -> str:
        """Short stable hash of the effective settings, recorded in every trace and run manifest."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """The effective configuration as TOML (what ``geosleuth config show`` prints)."""
        lines: list[str] = []
        for section, values in self.model_dump(mode="json").items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                if value is not None:
                    lines.append(f"{key} = {json.dumps(value)}")
            lines.append("")
        return "\n".join(lines)


def _parse_value(raw: str) -> Any:
    """'3' -> 3, 'true' -> True, '[0, 5]' -> [0, 5], 'abc' -> 'abc' (TOML scalar syntax)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_path(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{origin}: expected SECTION.KEY (e.g. vlm.backend), got {dotted!r}")
    section, key = parts
    if section not in Config.model_fields:
        raise ConfigError(f"{origin}: unknown section {section!r}; sections are {', '.join(Config.model_fields)}")
    tree.setdefault(section, {})[key] = value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective configuration (see module docstring for precedence)."""
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    file = Path(path) if path else (Path(environ["GEOSLEUTH_CONFIG"]) if environ.get("GEOSLEUTH_CONFIG") else None)
    if file is None and Path(DEFAULT_CONFIG_FILE).is_file():
        file = Path(DEFAULT_CONFIG_FILE)
    if file is not None:
        try:
            tree = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(file)!r} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"config file {str(file)!r} is not valid TOML: {exc}") from None
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
            _set_path(tree, dotted, _parse_value(raw), f"environment variable {name}")
    _apply_assignments(tree, overrides or [], "--set")
    from geosleuth.recipes import apply_recipe

    if not isinstance(tree.get("vlm", {}), dict):
        raise ConfigError(f"invalid configuration: [vlm] must be a table{f' (in {file})' if file else ''}")
    _, why = apply_recipe(tree)
    tree["vlm"].setdefault("recipe_reason", why)
    return _validated(tree, f" (from {file})" if file else "")


def _apply_assignments(tree: dict[str, Any], assignments: Sequence[str], origin: str) -> None:
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"{origin} {item!r}: expected SECTION.KEY=VALUE")
        _set_path(tree, key.strip(), _parse_value(raw.strip()), f"{origin} {item!r}")


def _validated(tree: dict[str, Any], where: str) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration{where}: {problems}") from None


def apply_overrides(
    config: Config, overrides: Sequence[str] | Mapping[str, Any], *, origin: str = "--set"
) -> Config:
    """``config`` with overrides applied (later wins), validated. ``overrides`` is either
    ``section.key=value`` strings, read as ``--set`` reads them, or a mapping of typed values:
    ``{"section__key": value}`` / ``{"section.key": value}`` / ``{"section": {"key": value}}``
    (``Geolocator.from_config(**overrides)``)."""
    tree = config.model_dump(mode="json")
    if isinstance(overrides, Mapping):
        for name, value in overrides.items():
            dotted = name.replace("__", ".")
            if "." in dotted:
                _set_path(tree, dotted, value, f"{origin} {name!r}")
            elif isinstance(value, Mapping):
                for key, item in value.items():
                    _set_path(tree, f"{name}.{key}", item, f"{origin} {name!r}")
            else:
                raise ConfigError(f"{origin} {name!r}: give a dict of settings, or use {name}__KEY=value")
        return _validated(tree, f" after {origin} {dict(overrides)!r}")
    _apply_assignments(tree, overrides, origin)
    return _validated(tree, f" after {origin} {list(overrides)}")


def expand_path(path: Path) -> Path:
    """``~`` and environment variables expanded; relative paths stay relative to the working dir."""
    return Path(os.path.expandvars(str(path))).expanduser()
