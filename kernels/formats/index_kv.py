"""The FP8 indexer K cache (DeepSeek V3.2 / V4 "lightning indexer"): fused pages of values and scales.

One page of ``page_size`` tokens of head dim ``D`` is ``page_size * (D + 4)`` bytes: first the
``page_size * D`` fp8 e4m3 values (token-major, ``D`` bytes per token), then ``page_size`` fp32
per-token scales (little-endian, the device's byte order). The dequantized key of a token is
``fp8_value * scale``. Tokens past the end of the last page are padding (zero values, scale 1.0);
kernels never read them because they are past every context length.
"""
from __future__ import annotations

import torch

__all__ = ["pack_index_kv", "split_index_kv", "unpack_index_kv"]

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def pack_index_kv(k: torch.Tensor, page_size: int = 64) -> torch.Tensor:
    """Quantize ``k [num_tokens, D]`` (any float dtype) to the fused paged layout.

    The per-token scale is ``amax(|k_t|) / 448`` (1.0 for an all-zero token), values are
    ``k_t / scale`` rounded to float8_e4m3fn. Returns uint8 ``[ceil(num_tokens / page_size),
    page_size * (D + 4)]`` on ``k``'s device; the last page is padded.
    """
    if k.dim() != 2 or not k.is_floating_point():
        raise ValueError(f"k: expected a 2-D float tensor [num_tokens, D], got {k.dtype} {tuple(k.shape)}")
    if page_size < 1:
        raise ValueError(f"page_size: must be positive, got {page_size}")
    num_tokens, dim = k.shape
    num_pages = -(-num_tokens // page_size)
    padded = num_pages * page_size
    kf = k.float()
    amax = kf.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    values = (kf / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(torch.uint8)
    vals = torch.zeros(padded, dim, dtype=torch.uint8, device=k.device)
    vals[:num_tokens] = values
    scales = torch.ones(padded, dtype=torch.float32, device=k.device)
    scales[:num_tokens] = scale
    page_vals = vals.view(num_pages, page_size * dim)
    page_scales = scales.view(num_pages, page_size).view(torch.uint8)
    return torch.cat([page_vals, page_scales], dim=1).contiguous()


def split_index_kv(cache: torch.Tensor, page_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp8 values (uint8 ``[num_pages, page_size, D]``) and fp32 scales (``[num_pages, page_size]``)."""
    if cache.dim() != 2 or cache.dtype != torch.uint8:
        raise ValueError(f"cache: expected a 2-D uint8 tensor, got {cache.dtype} {tuple(cache.shape)}")
    page_bytes = cache.shape[1]
    if page_size < 1 or page_bytes % page_size or page_bytes // page_size <= 4:
        raise ValueError(f"cache: page of {page_bytes} bytes is not page_size={page_size} tokens of D + 4 bytes")
    dim = page_bytes // page_size - 4
    num_pages = cache.shape[0]
    values = cache[:, : page_size * dim].reshape(num_pages, page_size, dim)
    scales = cache[:, page_size * dim:].contiguous().view(torch.float32).reshape(num_pages, page_size)
    return values, scales


def unpack_index_kv(cache: torch.Tensor, page_size: int = 64) -> torch.Tensor:
    """The exact dequantized keys, float32 ``[num_pages * page_size, D]`` (padding included)."""
    values, scales = split_index_kv(cache, page_size)
    keys = values.view(torch.float8_e4m3fn).float() * scales[:, :, None]
    return keys.reshape(-1, values.shape[2])
