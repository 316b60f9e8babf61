"""Backends by name: ``@register_backend("name")`` on a factory, ``create_backend(vlm_config)``.

As with the encoder registry (``index/encoders.py``), implementations register themselves. The
built-in ones are imported by module name the first time their name is asked for, so this module
imports none of them (no import cycle, and no torch/vLLM/openai import until a backend is made).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from geosleuth.errors import ConfigError

if TYPE_CHECKING:
    from geosleuth.config import VLMConfig
    from geosleuth.vlm.backends import VLMBackend

BackendFactory = Callable[["VLMConfig"], "VLMBackend"]
_F = TypeVar("_F", bound=Callable[..., object])

# The built-in backends' modules; each registers its name when imported.
BUILTIN_BACKENDS = {
    "transformers": "geosleuth.vlm.transformers_backend",
    "openai": "geosleuth.vlm.openai_backend",
    "vllm": "geosleuth.vlm.vllm_engine",
}
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[_F], _F]:
    """Decorator: make ``factory(vlm_config) -> VLMBackend`` available as ``vlm.backend = name``."""

    def decorator(factory: _F) -> _F:
        if name in _BACKENDS and _BACKENDS[name] is not factory:
            raise ValueError(f"a VLM backend named {name!r} is already registered ({_BACKENDS[name]!r})")
        _BACKENDS[name] = factory  # type: ignore[assignment]
        return factory

    return decorator


def backend_names() -> list[str]:
    """Every name ``vlm.backend`` accepts besides ``none``."""
    return sorted(set(_BACKENDS) | set(BUILTIN_BACKENDS))


def create_backend(vlm_config: VLMConfig) -> VLMBackend:
    """The backend ``vlm_config.backend`` names. The in-process ones load their model here, once."""
    name = vlm_config.backend
    if name == "none":
        raise ConfigError(
            "vlm.backend is 'none', so there is no VLM to ask; set vlm.backend to 'transformers' "
            "(in-process) or 'openai' (a server such as `geosleuth vlm serve`)"
        )
    if name not in _BACKENDS and name in BUILTIN_BACKENDS:
        importlib.import_module(BUILTIN_BACKENDS[name])
    factory = _BACKENDS.get(name)
    if factory is None:
        raise ConfigError(f"vlm.backend {name!r} is not known; use one of {', '.join(backend_names())} or none")
    return factory(vlm_config)
