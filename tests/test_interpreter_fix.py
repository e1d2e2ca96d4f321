"""The interpreter patches: bf16 tl.dot and fp32 -> bf16 rounding match what the GPU (and torch) compute."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import aotune.kernels  # noqa: F401 - applies the patches under TRITON_INTERPRET=1


@triton.jit
def _round_kernel(x_ptr, o_ptr, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(o_ptr + i, tl.load(x_ptr + i, mask=i < n).to(tl.bfloat16), mask=i < n)


@triton.jit
def _dot_kernel(a_ptr, b_ptr, o_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    a = tl.load(a_ptr + i[:, None] * N + i[None, :])
    b = tl.load(b_ptr + i[:, None] * N + i[None, :])
    tl.store(o_ptr + i[:, None] * N + i[None, :], tl.dot(a, b))


def test_fp32_to_bf16_rounds_to_nearest_even() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=gen) * torch.logspace(-30, 30, 1000)
    x[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8])
    out = torch.empty(1000, dtype=torch.bfloat16)
    _round_kernel[(1,)](x, out, 1000, BLOCK=1024)
    ref = x.to(torch.bfloat16)
    both_nan = torch.isnan(out.float()) & torch.isnan(ref.float())
    assert bool(((out.view(torch.int16) == ref.view(torch.int16)) | both_nan).all())
    assert out[4].item() == 1.0 and out[5].item() == 1.0 + 2**-6  # ties go to even


def test_bf16_dot_is_a_real_product() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(16, 16, generator=gen).bfloat16()
    b = torch.randn(16, 16, generator=gen).bfloat16()
    out = torch.empty(16, 16)
    _dot_kernel[(1,)](a, b, out, N=16)
    torch.testing.assert_close(out, a.float() @ b.float(), rtol=1e-5, atol=1e-5)
