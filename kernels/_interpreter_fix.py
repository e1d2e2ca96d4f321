"""A fix for Triton 3.6's CPU interpreter: ``tl.dot`` on bf16 operands multiplies their raw bits.

The interpreter stores bf16 as uint16 and its ``create_dot`` hands those integers straight to
``np.matmul`` (fp8 operands are converted, bf16 ones are not), so every bf16 ``tl.dot`` returns
garbage under ``TRITON_INTERPRET=1``. This patch widens bf16 operands to fp32 first, which is exact,
and is applied only when the interpreter is on. GPU code paths are untouched.
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
