"""MXFP4: E2M1 (FP4) values packed two per byte along K, with one E8M0 scale byte per group of K.

Layout (KERNELS.md section 1): ``packed[..., n, k // 2]`` holds element ``2j`` in its LOW nibble and
``2j + 1`` in its high nibble (the order of Triton's ``dot_scaled`` and of gpt-oss checkpoints);
``scales[..., n, k // group_size]`` holds the E8M0 exponent byte ``s`` of value ``2 ** (s - 127)``,
byte 255 is NaN. E2M1 codes 0..15 are 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives (bit 3 = sign).

Quantization choices (where the spec is silent):
- the group scale is the smallest power of two ``2**e`` with ``amax / 2**e <= 6`` ("round the
  scale up", as OpenAI's triton_kernels does by default), so no value saturates; an all-zero group
  gets scale byte 127 (1.0); the exponent is clamped to the E8M0 range [0, 254];
- values round to the nearest E2M1 value, ties to the even code (round-half-to-even on the mantissa);
- non-finite inputs raise ``ValueError``.
Any tensor ``dequantize_mxfp4`` produces is quantized back to itself exactly (the round trip is exact
on representable values).
"""
from __future__ import annotations

import torch

__all__ = ["E2M1_VALUES", "dequantize_mxfp4", "quantize_mxfp4"]

E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
# Midpoints between consecutive magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6; at the ones of index 1, 3, 5 the
# even code is the upper neighbour, at 0, 2, 4, 6 the lower one.
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
_TIE_UP = (False, True, False, True, False, True, False)


def _check_group(k: int, group_size: int, name: str) -> None:
    if group_size < 2 or group_size % 2:
        raise ValueError(f"group_size: must be an even integer >= 2, got {group_size}")
    if k % group_size:
        raise ValueError(f"{name}: K={k} is not a multiple of group_size={group_size}")


def quantize_mxfp4(w: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``w [..., N, K]`` (any float dtype) to MXFP4.

    Returns ``(packed uint8 [..., N, K // 2], scales uint8 [..., N, K // group_size])`` on ``w``'s device.
    """
    if not w.is_floating_point() or w.dim() < 2:
        raise ValueError(f"w: expected a floating tensor [..., N, K], got {w.dtype} of shape {tuple(w.shape)}")
    k = w.shape[-1]
    _check_group(k, group_size, "w")
    w64 = w.detach().to(torch.float64)
    if not torch.isfinite(w64).all():
        raise ValueError("w: holds NaN or inf, which MXFP4 cannot represent")
    groups = w64.reshape(*w.shape[:-1], k // group_size, group_size)
    amax = groups.abs().amax(dim=-1)
    mantissa, exponent = torch.frexp(amax / 6.0)  # amax/6 = m * 2**e, m in [0.5, 1)
    exp = torch.where(mantissa > 0.5, exponent, exponent - 1)  # ceil(log2(amax / 6))
    exp = torch.where(amax > 0, exp, torch.zeros_like(exp)).clamp(-127, 127)
    scales = (exp + 127).to(torch.uint8)
    scaled = groups / torch.exp2(exp.to(torch.float64)).unsqueeze(-1)
    mags = scaled.abs().clamp(max=6.0)
    mids = torch.tensor(_MIDPOINTS, dtype=torch.float64, device=w.device)
    idx = torch.bucketize(mags, mids)  # ties go to the lower neighbour here
    tie_up = torch.tensor(_TIE_UP + (False,), device=w.device)[idx] & (mags == mids[idx.clamp(max=6)])
    codes = (idx + tie_up.to(idx.dtype)).to(torch.uint8)
    codes = codes | (torch.signbit(scaled) & (codes > 0)).to(torch.uint8) << 3
    codes = codes.reshape(*w.shape[:-1], k)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed.contiguous(), scales.contiguous()


def dequantize_mxfp4(packed: torch.Tensor, scales: torch.Tensor, group_size: int = 32) -> torch.Tensor:
    """The exact values of MXFP4 ``packed [..., N, K // 2]`` with ``scales [..., N, K // group_size]``, fp32."""
    if packed.dtype != torch.uint8 or packed.dim() < 2:
        raise ValueError(f"packed: expected uint8 [..., N, K/2], got {packed.dtype} of shape {tuple(packed.shape)}")
    if scales.dtype != torch.uint8:
        raise ValueError(f"scales: expected uint8, got {scales.dtype}")
    k = packed.shape[-1] * 2
    _check_group(k, group_size, "packed")
    if tuple(scales.shape) != (*packed.shape[:-1], k // group_size):
        raise ValueError(f"scales: expected shape {(*packed.shape[:-1], k // group_size)}, got {tuple(scales.shape)}")
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=packed.device)
    codes = torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(*packed.shape[:-1], k)
    values = table[codes.long()]
    exps = scales.to(torch.int32) - 127
    scale = torch.ldexp(torch.ones_like(exps, dtype=torch.float32), exps)
    scale = torch.where(scales == 255, torch.full_like(scale, float("nan")), scale)
    grouped = values.reshape(*packed.shape[:-1], k // group_size, group_size) * scale.unsqueeze(-1)
    return grouped.reshape(*packed.shape[:-1], k)


def pad_rows(t: torch.Tensor, pitch: int = 128) -> torch.Tensor:
    """The values of ``t [..., rows, n]`` as a view whose rows start every ``pitch`` bytes (a multiple of 16;
    the padding is zeros and never read). ``fused_moe`` takes MXFP4 weights and scales in this layout: a
    row that does not start on a 128-byte line costs its loads (gpt-oss's 1440-byte weight rows: about 3% per
    call on the H100, BENCHMARKS.md, MoE, twenty-third session); pad once, when the weights are loaded."""
    if t.dim() < 2:
        raise ValueError(f"t: expected a tensor [..., rows, n], got shape {tuple(t.shape)}")
    if not isinstance(pitch, int) or pitch <= 0 or pitch % 16:
        raise ValueError(f"pitch: expected a positive multiple of 16 bytes, got {pitch!r}")
    row_bytes = t.shape[-1] * t.element_size()
    width = -(-row_bytes // pitch) * pitch // t.element_size()
    wide = torch.zeros(*t.shape[:-1], width, dtype=t.dtype, device=t.device)
    wide[..., :t.shape[-1]] = t
    return wide[..., :t.shape[-1]]
