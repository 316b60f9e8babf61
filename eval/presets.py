"""Named evaluation presets: baselines and ablations as lists of configuration overrides.

Each preset is a list of ``section.key=value`` strings, exactly what ``--set`` takes, applied on
top of the base configuration (defaults < TOML file < environment < preset < the user's own
``--set`` flags, so a user can still point a preset at their server or gallery).

A few values are relative to the base configuration and written as ``{placeholder}``:

- ``{sample_budget}``: prompt variants x samples per variant in the base configuration (4 x 2 = 8
  with the defaults). Presets that ask the VLM fewer ways (one variant, or no retrieved context, in
  which case every variant is the same prompt) get this many samples per variant, so they compare
  with ``full`` at the same number of VLM samples: the ablation removes the variety, not samples.
- ``{largest_neighbor_count}``: the largest of ``prompts.neighbor_counts`` (15 by default).

The baselines use the pipeline's own machinery (no separate code path), so they are exactly what
their overrides say:

- ``geoclip-top1``: GeoCLIP's top GPS-gallery candidate. Only the ``geoclip`` score (GeoCLIP's own
  image-location similarity, the same one that ranks the GPS gallery), no refinement, so the answer
  is the top-1 GPS candidate.
- ``nearest-neighbor``: the most similar gallery image's coordinate. With the cluster radius
  (``verify.refine_radius_km``) at 0 every neighbour is its own place, whose mass is its
  similarity weight (``exp(sharpness * similarity)``), so the most similar neighbour's coordinate is
  the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# The very parser --set uses, so a preset's string means what it would mean on the command line.
from geosleuth.config import Config, apply_overrides
from geosleuth.errors import ConfigError

DEFAULT_PRESET = "full"

# Shared override groups.
_NO_VLM = ("vlm.backend=none",)
_NO_GALLERY_CANDIDATES = ("retrieval.k_neighbors=0", "retrieval.k_dissimilar=0")
# GPS gallery not loaded at all: nothing from it is used (saves loading 100K location embeddings).
_NO_GPS_GALLERY = ("index.gps_gallery=none",)
_NO_RETRIEVAL = (*_NO_GALLERY_CANDIDATES, "retrieval.k_gps=0", *_NO_GPS_GALLERY)
_ONLY_GEOCLIP = (
    "verify.w_geoclip=1", "verify.w_neighbor_support=0", "verify.w_vlm_agreement=0", "verify.w_geo_consistency=0",
)
_ONLY_NEIGHBOR_SUPPORT = (
    "verify.w_geoclip=0", "verify.w_neighbor_support=1", "verify.w_vlm_agreement=0", "verify.w_geo_consistency=0",
)
_ONLY_VLM_AGREEMENT = (
    "verify.w_geoclip=0", "verify.w_neighbor_support=0", "verify.w_vlm_agreement=1", "verify.w_geo_consistency=0",
)
_SAME_VLM_BUDGET = ("vlm.samples_per_variant={sample_budget}",)


@dataclass(frozen=True)
class Preset:
    """A named configuration: ``overrides`` are ``--set`` strings, possibly with ``{placeholders}``."""

    name: str
    kind: Literal["baseline", "system", "ablation"]
    description: str
    overrides: tuple[str, ...]
    uses_vlm: bool

    def resolve(self, base: Config) -> list[str]:
        """The overrides with placeholders filled in from ``base`` (see the module docstring)."""
        values = placeholder_values(base)
        return [item.format_map(values) for item in self.overrides]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "geoclip-top1", "baseline",
            "GeoCLIP alone: its top GPS-gallery candidate (no VLM, no gallery, no refinement)",
            (*_NO_VLM, *_NO_GALLERY_CANDIDATES, *_ONLY_GEOCLIP, "verify.refine_radius_km=0",
             'verify.candidate_sources=["gps-gallery"]'),
            uses_vlm=False,
        ),
        Preset(
            "nearest-neighbor", "baseline",
            "the most similar gallery image's coordinate (no VLM, no GPS gallery)",
            (*_NO_VLM, *_NO_GPS_GALLERY, "retrieval.k_dissimilar=0", *_ONLY_NEIGHBOR_SUPPORT,
             "verify.support_radius_km=0.001", "verify.refine_radius_km=0", 'verify.candidate_sources=["retrieval"]'),
            uses_vlm=False,
        ),
        Preset(
            "neighbor-vote", "baseline",
            "G3-style vote: the place (a cluster of verify.refine_radius_km) holding the most similarity-weighted "
            "gallery neighbours, refined within it (no VLM, no GPS gallery)",
            (*_NO_VLM, *_NO_GPS_GALLERY, "retrieval.k_dissimilar=0", *_ONLY_NEIGHBOR_SUPPORT,
             "verify.support_radius_km=200", 'verify.candidate_sources=["retrieval"]'),
            uses_vlm=False,
        ),
        Preset(
            "vlm-zero-shot", "baseline",
            "the VLM alone: no retrieved context, answers ranked by agreement between samples "
            "(as many VLM samples as full)",
            ("prompts.neighbor_counts=[0]", *_NO_RETRIEVAL, *_ONLY_VLM_AGREEMENT, *_SAME_VLM_BUDGET,
             'verify.candidate_sources=["vlm"]'),
            uses_vlm=True,
        ),
        Preset("full", "system", "the configured pipeline as it is (defaults), in agent.mode=pipeline",
               ("agent.mode=pipeline",), uses_vlm=True),
        Preset(
            "tools-agent", "system",
            "the configuration with agent.mode=tools: the VLM calls tools in a bounded loop (agent.max_tool_calls, "
            "max_tokens, max_seconds) and submits one answer; verification unchanged",
            ("agent.mode=tools",), uses_vlm=True,
        ),
        Preset(
            "no-retrieval", "ablation",
            "full without retrieval: no gallery neighbours or GPS candidates (neither shown to the VLM nor as "
            "candidates); verification unchanged; as many VLM samples as full",
            ("prompts.neighbor_counts=[0]", *_NO_RETRIEVAL, *_SAME_VLM_BUDGET),
            uses_vlm=True,
        ),
        Preset(
            "no-diversification", "ablation",
            "full with one prompt variant (the largest neighbour count) instead of several, as many VLM samples",
            ("prompts.neighbor_counts=[{largest_neighbor_count}]", *_SAME_VLM_BUDGET),
            uses_vlm=True,
        ),
        Preset(
            "no-verification", "ablation",
            "full, but the answer is the VLM answer most other samples agree with (no GeoCLIP, neighbour "
            "support or geographic-consistency scores; retrieval still feeds the prompts)",
            (*_ONLY_VLM_AGREEMENT, 'verify.candidate_sources=["vlm"]'),
            uses_vlm=True,
        ),
    )
}


def placeholder_values(base: Config) -> dict[str, object]:
    """``{sample_budget}`` and ``{largest_neighbor_count}`` for ``base``."""
    counts = list(dict.fromkeys(base.prompts.neighbor_counts)) or [0]
    return {
        "sample_budget": len(counts) * base.vlm.samples_per_variant,
        "largest_neighbor_count": max(counts),
    }


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ConfigError listing the names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown evaluation preset {name!r}; choose one of {', '.join(PRESETS)} "
            "(`geosleuth eval presets` lists what each one sets)"
        ) from None


def with_overrides(config: Config, overrides: Sequence[str], *, origin: str = "override") -> Config:
    """``config`` with ``section.key=value`` strings applied in order (later wins), validated."""
    return apply_overrides(config, overrides, origin=origin)


def preset_config(
    name: str, base: Config, *, extra_overrides: Sequence[str] = ()
) -> tuple[Config, list[str]]:
    """``base`` with preset ``name`` applied, then ``extra_overrides`` (the user's own, which win).

    Returns the configuration and the preset's resolved overrides.
    """
    preset = get_preset(name)
    resolved = preset.resolve(base)
    config = with_overrides(base, resolved, origin=f"preset {name!r} setting")
    if extra_overrides:
        config = with_overrides(config, extra_overrides, origin="--set")
    return config, resolved


def describe_presets(base: Config | None = None) -> list[dict[str, Any]]:
    """One row per preset: name, kind, description, overrides (and, given ``base``, resolved)."""
    rows: list[dict[str, Any]] = []
    for preset in PRESETS.values():
        row: dict[str, Any] = {
            "name": preset.name,
            "kind": preset.kind,
            "description": preset.description,
            "overrides": list(preset.overrides),
            "uses_vlm": preset.uses_vlm,
        }
        if base is not None:
            row["resolved"] = preset.resolve(base)
        rows.append(row)
    return rows
