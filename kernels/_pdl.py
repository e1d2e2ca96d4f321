"""Programmatic dependent launch (PDL, NVIDIA sm_90 and later) for the multi-launch decode calls.

A decode call of the MoE (first GEMM [, activation], second GEMM, reduce) or of FlashMLA (split pass,
combine) is a chain of small dependent launches, and at decode sizes the gaps between them are a large
part of the call. With PDL a later launch of the chain is started while the one before it still runs:

- every launch of the chain but the last calls ``griddepcontrol.launch_dependents`` on entry, so the next
  one is launched as soon as all of this one's programs are running (they never wait on it: no deadlock);
- every launch but the first is launched with ``launch_pdl=True`` and calls ``griddepcontrol.wait`` (in
  every program, before it reads what the launch before it wrote and before it writes anything) which
  returns once the launch before it has completed and its memory is visible. Each wait covers the whole
  chain before it, since no launch of the chain completes before its own wait returns;
- the first launch is a plain launch, so the call's inputs (activations, routing ids and weights, written
  by the caller's kernels) are complete before any launch of the chain starts: a later launch may read
  them, and the constant weights, before its wait. The MoE's second GEMM uses that to prefetch its weight
  tile into L2 (``cp.async.bulk.prefetch.L2``, one thread per program) while the first GEMM runs, where
  the call's active weights (both GEMMs': the first streams its own through L2 between a prefetch and its
  use) are at most ``PREFETCH_MAX_BYTES``.

It is a config parameter of both kernels (``PDL``: 0 or 1, tuned like the others; results are the same bits)
so the launches of a config, and what ``launches()`` compiles ahead of time, never depend on the device; a
config with PDL 1 on a device without it (older GPUs, the interpreter) is a ``ValueError``. Measured on the
H100 (BENCHMARKS.md, eighteenth session): 0.3 us per launch boundary, up to 19% of a MoE call at
DeepSeek-V4-Flash TP 8 M = 1 and up to 10% of a FlashMLA split-KV call at B = 1 and 8.
"""
from __future__ import annotations

import torch
import triton.language as tl
from triton import jit
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from aotune.kernels.device import device_class, has_pdl

# Half of the 50 MB L2 of the H100 and H200 (a GPU with more L2 just prefetches less often than it could).
PREFETCH_MAX_BYTES = 25 << 20


def supported(device: torch.device) -> bool:
    """Whether ``device`` runs PDL launches: an NVIDIA GPU of compute capability 9.0 or later (``has_pdl``)."""
    return has_pdl(device_class(device))


_WAIT = tl.constexpr("griddepcontrol.wait; // $0")
_LAUNCH = tl.constexpr("griddepcontrol.launch_dependents; // $0")
# Thread 0 of the program prefetches [ptr, ptr + nbytes) rounded inward to 16 bytes (the instruction's
# alignment); nothing when that is empty.
_PREFETCH = tl.constexpr("""{
.reg .pred p, q;
.reg .b64 a, z;
.reg .u32 t, n;
mov.u32 t, %tid.x;
add.s64 z, $1, $2;
and.b64 z, z, -16;
add.s64 a, $1, 15;
and.b64 a, a, -16;
sub.s64 z, z, a;
cvt.u32.s64 n, z;
setp.eq.u32 p, t, 0;
setp.gt.s64 q, z, 0;
and.pred p, p, q;
@p cp.async.bulk.prefetch.L2.global [a], n;
mov.u32 $0, 0;
}""")


@jit
def gdc_wait():
    """Triton: wait until the launch before this one has completed and its writes are visible."""
    tl.inline_asm_elementwise(_WAIT, "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@jit
def gdc_launch_dependents():
    """Triton: let the next launch of the chain start (once every program of this one has called this)."""
    tl.inline_asm_elementwise(_LAUNCH, "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@jit
def prefetch_l2(ptr, nbytes):
    """Triton: prefetch the bytes ``[ptr, ptr + nbytes)`` (a scalar pointer; int64 count) into L2."""
    tl.inline_asm_elementwise(_PREFETCH, "=r,l,l", [ptr, nbytes], dtype=tl.int32, is_pure=False, pack=1)


@gluon.jit
def gl_gdc_wait():
    """Gluon: ``gdc_wait``."""
    gl.inline_asm_elementwise(_WAIT, "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def gl_gdc_launch_dependents():
    """Gluon: ``gdc_launch_dependents``."""
    gl.inline_asm_elementwise(_LAUNCH, "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def gl_prefetch_l2(ptr, nbytes):
    """Gluon: ``prefetch_l2``."""
    gl.inline_asm_elementwise(_PREFETCH, "=r,l,l", [ptr, nbytes], dtype=gl.int32, is_pure=False, pack=1)
