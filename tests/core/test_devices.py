"""dtype 'auto': float32 on CPU, except bfloat16 for memory-bound models (VLM decoding) on CPUs that
multiply bfloat16 natively; explicit dtypes are taken as given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geosleuth import devices
from geosleuth.errors import ConfigError

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_is_bfloat16_only_for_memory_bound_models_on_native_bfloat16_cpus(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: native)
    assert devices.resolve_dtype("auto", CPU, memory_bound=True) == (torch.bfloat16 if native else torch.float32)
    assert devices.resolve_dtype("auto", CPU) == torch.float32  # encoders: embeddings match a float32 index


def test_explicit_dtypes_win_and_unknown_ones_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: True)
    assert devices.resolve_dtype("float32", CPU, memory_bound=True) == torch.float32
    with pytest.raises(ConfigError, match="'int8' is not known"):
        devices.resolve_dtype("int8", CPU)


def test_native_bfloat16_follows_the_cpu_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set(cpuinfo.read_text().split())
    assert devices.cpu_has_native_bfloat16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
