"""Opt-in int8 weights for the in-process VLM on CPU (``vlm.quantize = "int8"``).

Token-by-token decoding on a CPU is bound by reading every weight once per step. PyTorch's dynamic
quantization keeps each linear layer's weights in int8 (one scale per output channel) and quantizes
the activations on the fly, so a step reads a quarter of float32's bytes and half of bfloat16's
(``bench/bench_vlm_cpu_settings.py`` prints the measured ratio). Embeddings, norms and attention
stay in float32. Off by default: the answer quality of a quantized model could not be measured here.

It uses ``torch.ao.quantization.quantize_dynamic``, which torch has deprecated in favour of torchao
(it warns when used); a torch without it gets a ConfigError that says to turn the option off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geosleuth.errors import ConfigError

if TYPE_CHECKING:
    import torch


def int8_load_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype to load a model in before :func:`quantize_int8`: float32 (dynamic quantization
    takes float32 activations), on CPU only."""
    import torch

    if device.type != "cpu":
        raise ConfigError(
            f"vlm.quantize=int8 runs on CPU only (vlm.device resolved to {device}); set vlm.quantize=none"
        )
    if dtype not in ("auto", "float32"):
        raise ConfigError(f"vlm.quantize=int8 computes in float32; set vlm.dtype=auto or float32 (got {dtype!r})")
    return torch.float32


def quantize_int8(model: Any) -> Any:
    """``model`` with every ``nn.Linear`` replaced by a dynamically quantized int8 one (per channel)."""
    import torch

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:
        raise ConfigError(
            f"vlm.quantize=int8 needs torch.ao.quantization, which this torch {torch.__version__} lacks ({exc}); "
            "set vlm.quantize=none"
        ) from None
    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
