"""Device and dtype resolution, one rule for every model (encoders and in-process VLMs).

``auto`` picks CUDA when a GPU is usable, else the CPU; an explicit CUDA request on a machine
without one is a :class:`ConfigError` naming the setting. torch is imported when called, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geosleuth.errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "float16", "bfloat16")


def cuda_available() -> bool:
    """True when torch sees a usable CUDA GPU (False when torch is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str, *, setting: str = "device") -> torch.device:
    """'auto' -> CUDA when available, else CPU; explicit CUDA requests fail clearly without a GPU.

    ``setting`` names the configuration key in error messages (e.g. ``vlm.device``).
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{setting}={device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={device!r} but no CUDA GPU is available here; use auto or cpu")
    return resolved


def cpu_has_native_bfloat16() -> bool:
    """True when this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere bfloat16 is
    emulated and slower than float32."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_dtype(dtype: str, device: torch.device, *, memory_bound: bool = False) -> torch.dtype:
    """'auto' -> float32 on CPU (half-precision matmuls are slow on most CPUs); on CUDA bfloat16
    where the GPU supports it (the dtype VLM checkpoints ship in), else float16.

    ``memory_bound``: the model's run time goes to reading weights and caches (token-by-token
    decoding): on a CPU with native bfloat16, 'auto' is bfloat16 there, which halves those reads
    (measured on 2 busy cores, ``bench/bench_vlm_cpu_settings.py``: vision tower 0.55-0.58x, prefill
    0.26-0.70x, decoding 0.21-0.78x the float32 CPU time).
    Encoders keep float32 on CPU, so query embeddings match a float32 index exactly."""
    import torch

    if dtype == "auto":
        if device.type != "cuda":
            return torch.bfloat16 if memory_bound and cpu_has_native_bfloat16() else torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not known; use one of {', '.join(DTYPES)}")
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
