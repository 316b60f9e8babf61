"""Approximate similarity scans over a GPS gallery's embeddings, each with a bound on its error.

:meth:`GPSGallery.top_k <geosleuth.index.gps_gallery.GPSGallery.top_k>` scans every gallery point
with one of these, then rescores the best candidates exactly in float32. A scan returns the
approximate similarities and a bound ``b`` such that ``|approx_i - exact_i| <= b`` for every row,
which is what lets ``top_k`` prove its candidate set holds the exact top-k.

- ``int8`` (the default where it works): the embeddings rounded to int8 with one scale per row,
  multiplied by fbgemm's int8 kernel (torch's dynamic-quantised linear). 100K x 512 = 51 MB read per
  query, a quarter of float32; about 1.4 ms CPU per query on one core of this machine. The query is
  NOT rounded to 8 bits: it is split into three 7-bit digit vectors (q = t1*c1 + t2*c2 + t3*c3 +
  residual, the residual below 1e-6 of max|q|), multiplied in one call (the kernel reads the matrix
  once for all rows), so the only real error is the rounding of the matrix, which is independent from
  row to row; errors shared by all rows (a rounded query) would shift GeoCLIP's softmax normaliser.
  Bound (Cauchy-Schwarz): ``max_i ||w8_i - w_i|| * ||q|| + max_i ||w_i|| * ||residual||`` plus float
  slack, about 0.012 for GeoCLIP's gallery; the errors seen are about 0.0016 at most.
- ``float32``: the exact product, chosen by ``"auto"`` for galleries small enough (8 MB) that the
  scan costs little either way; bound 0.
- ``float16``: the embeddings in half precision, torch's half-precision matrix-vector product; 100 MB
  per query, about 4.5 ms. The fallback where torch has no usable int8 kernel.
"""

from __future__ import annotations

import logging
import warnings
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

# float16: each product w_j * q_j is off by at most 2^-10 of |w_j q_j| (both rounded to 11 bits), so by
# Cauchy-Schwarz a similarity between unit vectors is off by at most 2^-10 (plus float32 accumulation).
HALF_SCAN_ERROR = 1e-3
# int8: the float32 arithmetic around the exact integer products (scaling, digit recombination)
# adds well under 1e-5 for unit vectors; this slack covers it with room.
INT8_ARITHMETIC_SLACK = 1e-4
# Query digits are 7-bit (|c| <= 63), sent offset by +64 as the kernel's 7-bit unsigned inputs
# (``reduce_range``: fbgemm's AVX2 path, without VNNI, sums pairs of u8*s8 products in saturating
# int16, and 2 * 127 * 127 fits). The query's largest element is made positive (the result negated
# back), so the first digit row holds 127 and the kernel's own input scale comes out exactly 1 with
# zero point 0: it re-quantises our integers losslessly.
_DIGIT_MAX = 63
_DIGIT_OFFSET = 64
_DIGITS = 3
# "auto" scans galleries up to this size exactly (4,096 points of 512 float32 numbers: tens of µs).
EXACT_SCAN_MAX_BYTES = 8 << 20
_BUILD_CHUNK = 2048
SCAN_VARIANTS = ("auto", "int8", "float16", "float32")


def dot_rows(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix @ vector in one thread. The scan is memory-bound (100K x 512 float32 = 205 MB): a
    multi-threaded BLAS gemv gains little and, on a busy machine (the VLM, other jobs), loses
    badly to thread contention; measured on 2 busy cores: 8.7 ms median vs 16 ms."""
    if hasattr(np, "vecdot"):  # numpy >= 2.0
        return np.vecdot(matrix, vector)
    return np.einsum("ij,j->i", matrix, vector)


class GalleryScan(Protocol):
    """Similarities of one unit query to every row, approximately, with the error bound."""

    name: str

    def similarities(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        """(N,) float32 approximate similarities (a fresh array) and ``b`` with ``|error_i| <= b``."""
        ...


class ExactScan:
    """The float32 product itself."""

    name = "float32"

    def __init__(self, embeddings: np.ndarray) -> None:
        self._matrix = np.ascontiguousarray(embeddings, dtype=np.float32)

    def similarities(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        return dot_rows(self._matrix, query), 0.0


class HalfScan:
    """float16 copy of the embeddings, torch's half-precision matrix-vector product."""

    name = "float16"

    def __init__(self, embeddings: np.ndarray) -> None:
        self._half = np.ascontiguousarray(embeddings, dtype=np.float16)

    def similarities(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        import torch

        with torch.inference_mode():
            out = torch.mv(torch.from_numpy(self._half), torch.from_numpy(query.astype(np.float16)))
        return out.float().numpy(), HALF_SCAN_ERROR  # stated for unit rows and query (GeoCLIP's are)


class Int8Scan:
    """Per-row int8 embeddings multiplied by fbgemm's int8 kernel; see the module docstring."""

    name = "int8"

    def __init__(self, embeddings: np.ndarray) -> None:
        import torch

        matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        rows, self._dim = matrix.shape
        codes = np.empty((rows, self._dim), dtype=np.int8)
        scales = np.empty(rows, dtype=np.float32)
        residual_sq = np.empty(rows, dtype=np.float32)
        norm_sq = np.empty(rows, dtype=np.float32)
        self._row_sums = np.empty(rows, dtype=np.float32)  # the digits arrive offset by +64
        for start in range(0, rows, _BUILD_CHUNK):  # chunks that stay in cache: 4x faster than whole
            part = matrix[start : start + _BUILD_CHUNK]
            absmax = np.abs(part).max(axis=1)
            scale = np.where(absmax > 0, absmax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
            code = np.rint(part / scale[:, None])
            codes[start : start + len(part)] = code
            rounded = code.astype(np.float32) * scale[:, None]  # what the kernel multiplies
            residual = rounded - part
            scales[start : start + len(part)] = scale
            residual_sq[start : start + len(part)] = np.einsum("ij,ij->i", residual, residual)
            norm_sq[start : start + len(part)] = np.einsum("ij,ij->i", rounded, rounded)
            self._row_sums[start : start + len(part)] = rounded.sum(axis=1, dtype=np.float64)
        self._residual_norm = float(np.sqrt(residual_sq.max()))
        self._row_norm = float(np.sqrt(norm_sq.max()))
        self._row_sums_t = torch.from_numpy(self._row_sums)
        with warnings.catch_warnings():  # kept short: the filters are process-wide while it lasts
            # torch 2.13 flags quantised tensor types as deprecated; they are only the carrier for
            # fbgemm's packing here (a torch without them falls back to HalfScan, see make_scan).
            warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
            weight = torch._make_per_channel_quantized_tensor(
                torch.from_numpy(codes),
                torch.from_numpy(scales.astype(np.float64)),
                torch.zeros(len(codes), dtype=torch.long),
                0,
            )
        self._packed = torch.ops.quantized.linear_prepack(weight, None)

    def similarities(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        import torch

        inputs = np.full((_DIGITS, self._dim), _DIGIT_OFFSET, dtype=np.float32)
        steps = np.zeros(_DIGITS, dtype=np.float32)
        rest = query.astype(np.float64)
        sign = 1.0 if rest[np.argmax(np.abs(rest))] >= 0 else -1.0  # first row holds 127 (module comment)
        rest *= sign
        for d in range(_DIGITS):
            top = float(np.abs(rest).max())
            if top == 0.0:
                break
            steps[d] = top / _DIGIT_MAX
            digits = np.clip(np.rint(rest / float(steps[d])), -_DIGIT_MAX, _DIGIT_MAX)
            rest -= digits * float(steps[d])
            inputs[d] += digits
        with torch.inference_mode():
            out = torch.ops.quantized.linear_dynamic(torch.from_numpy(inputs), self._packed, True)
            # sign * (steps @ out - 64 * sum(steps) * row_sums), in one pass over the rows
            sims = torch.addmv(
                self._row_sums_t, out.t(), torch.from_numpy(steps * np.float32(sign)),
                beta=-_DIGIT_OFFSET * float(steps.sum()) * sign,
            ).numpy()
        query = query * sign
        represented = float(np.linalg.norm(query.astype(np.float64) - rest))
        bound = (
            self._residual_norm * represented
            + self._row_norm * float(np.linalg.norm(rest))
            + INT8_ARITHMETIC_SLACK * max(1.0, self._row_norm) * represented
        )
        return sims, bound


def make_scan(embeddings: np.ndarray, variant: str = "auto") -> GalleryScan:
    """The scan for ``variant``: ``"int8"``, ``"float16"``, ``"float32"`` or ``"auto"``.

    ``"auto"`` scans small galleries exactly; for larger ones it checks the int8 kernel once against
    the exact float32 product and falls back to float16 (logged) when torch lacks it or it disagrees
    beyond its own bound.
    """
    check_variant(variant)
    scans: dict[str, type[Int8Scan | HalfScan | ExactScan]] = {s.name: s for s in (Int8Scan, HalfScan, ExactScan)}
    if variant in scans:
        return scans[variant](embeddings)
    if embeddings.shape[0] * embeddings.shape[1] * 4 <= EXACT_SCAN_MAX_BYTES:
        return ExactScan(embeddings)
    try:
        scan = Int8Scan(embeddings)
        _check(scan, embeddings)
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        log.info("GPS gallery: int8 scan unavailable (%s); scanning in float16", exc)
        return HalfScan(embeddings)
    return scan


def check_variant(variant: str) -> None:
    """Raise ValueError naming the choices unless ``variant`` is one of SCAN_VARIANTS."""
    if variant not in SCAN_VARIANTS:
        raise ValueError(f"unknown GPS-gallery scan {variant!r}; use one of {', '.join(map(repr, SCAN_VARIANTS))}")


def _check(scan: Int8Scan, embeddings: np.ndarray) -> None:
    """One query through the int8 kernel against float32: guards against a kernel that saturates."""
    rng = np.random.default_rng(0)
    query = embeddings[rng.integers(len(embeddings))].astype(np.float32) + rng.standard_normal(
        embeddings.shape[1]
    ).astype(np.float32) * np.float32(0.05)
    query /= max(float(np.linalg.norm(query)), 1e-12)
    approx, bound = scan.similarities(query)
    exact = np.asarray(embeddings, dtype=np.float32) @ query
    worst = float(np.abs(approx - exact).max())
    if not worst <= bound:
        raise RuntimeError(f"int8 kernel off by {worst:.3g}, beyond its bound {bound:.3g}")
