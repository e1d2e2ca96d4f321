"""Two fixes for Triton 3.6's CPU interpreter, applied only when ``TRITON_INTERPRET=1``.

1. ``tl.dot`` on bf16 operands multiplies their raw bits: the interpreter stores bf16 as uint16 and its
   ``create_dot`` hands those integers straight to ``np.matmul`` (fp8 operands are converted, bf16 ones
   are not). The patch widens bf16 operands to fp32 first, which is exact.
2. fp32 -> bf16 casts truncate (the GPU rounds to nearest even): the patch rounds to nearest even, as
   ``.to(tl.bfloat16)`` does on the GPU, so CPU tests see the GPU's numbers.

GPU code paths are untouched.
"""
from __future__ import annotations

import os


def apply() -> None:
    """Patch the interpreter's dot once, if ``TRITON_INTERPRET=1``."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("1", "true", "True"):
        return
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "_aotune_patched", False):
        return
    original = builder.create_dot

    def widen(handle: interpreter.TensorHandle) -> interpreter.TensorHandle:
        if handle.dtype.scalar != tl.bfloat16:
            return handle
        bits = handle.data.astype(np.uint32) << 16
        return interpreter.TensorHandle(bits.view(np.float32), tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):  # type: ignore[no-untyped-def]
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    create_dot._aotune_patched = True  # type: ignore[attr-defined]
    builder.create_dot = create_dot
    _patch_bf16_rounding(builder, interpreter, tl, np)


def fp32_to_bf16_bits(values: "np.ndarray") -> "np.ndarray":  # noqa: F821 - numpy imported lazily
    """Round-to-nearest-even fp32 -> bf16, as uint16 bit patterns (NaN stays a quiet NaN)."""
    import numpy as np

    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    return np.where(nan, ((bits >> 16) | 0x0040).astype(np.uint16), rounded)


def _patch_bf16_rounding(builder, interpreter, tl, np) -> None:  # type: ignore[no-untyped-def]
    cast, to_fp = builder.cast_impl, builder.create_fp_to_fp

    def is_fp32_to_bf16(src, dst_type) -> bool:  # type: ignore[no-untyped-def]
        return src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16

    def cast_impl(self, src, dst_type):  # type: ignore[no-untyped-def]
        if is_fp32_to_bf16(src, dst_type):
            return interpreter.TensorHandle(fp32_to_bf16_bits(src.data), tl.bfloat16)
        return cast(self, src, dst_type)

    def create_fp_to_fp(self, src, dst_type, rounding_mode):  # type: ignore[no-untyped-def]
        if is_fp32_to_bf16(src, dst_type):
            return interpreter.TensorHandle(fp32_to_bf16_bits(src.data), tl.bfloat16)
        return to_fp(self, src, dst_type, rounding_mode)

    builder.cast_impl = cast_impl
    builder.create_fp_trunc = lambda self, src, dst_type: cast_impl(self, src, dst_type)
    builder.create_fp_to_fp = create_fp_to_fp
