"""FP8 KV-cache byte layouts of DeepSeek sparse MLA (KERNELS.md section 2): pack, unpack, gather.

V3.2 ("v32"), 656 bytes per token, cache ``[num_pages, page_size, 656]`` uint8:
  [0, 512) fp8 e4m3 nope values, [512, 528) four fp32 scales (one per 128 values),
  [528, 656) 64 bf16 rope values (unscaled). Scale = amax / 448 of its 128 values (FlashMLA).
V4 ("v4"), 584 bytes per token split inside a page, cache ``[num_pages, page_bytes]`` uint8 with
  ``page_bytes = ceil(page_size * 584 / 576) * 576``: token t's values at ``t * 576``
  ([0, 448) fp8 nope, [448, 576) 64 bf16 rope), its scales at ``page_size * 576 + t * 8``
  (7 UE8M0 bytes, value 2^(byte - 127), one per 64 nope values, then one zero pad byte).
  The UE8M0 scale is the smallest power of two with amax / scale <= 448.

Pages may be padded: readers take the page stride from the tensor's stride. Tokens past the end of
the input (the tail of the last page) and the V4 page padding are zero bytes. ``unpack`` returns the
exact dequantized values (fp32) the kernel must see; ``gather_kv`` dequantizes only selected tokens.
"""
from __future__ import annotations

import torch

__all__ = ["gather_kv", "pack_kv_v32", "pack_kv_v4", "unpack_kv_v32", "unpack_kv_v4", "v4_page_bytes"]

FP8_MAX = 448.0
V32_BYTES, V32_D, V32_NOPE, V32_GROUP = 656, 576, 512, 128
V4_BYTES, V4_VALUE_BYTES, V4_D, V4_NOPE, V4_GROUP = 584, 576, 512, 448, 64
ROPE = 64


def v4_page_bytes(page_size: int) -> int:
    """Bytes of one V4 page: ``page_size * 584`` rounded up to a multiple of 576."""
    return -(-page_size * V4_BYTES // V4_VALUE_BYTES) * V4_VALUE_BYTES


def _check_input(kv: torch.Tensor, width: int, page_size: int) -> torch.Tensor:
    if kv.dim() != 2 or kv.shape[1] != width or not kv.is_floating_point():
        raise ValueError(f"kv: expected a float tensor [num_tokens, {width}], got {kv.dtype} {tuple(kv.shape)}")
    if page_size < 1:
        raise ValueError(f"page_size: must be >= 1, got {page_size}")
    pad = (-kv.shape[0]) % page_size
    kv = kv.float()
    return torch.cat([kv, kv.new_zeros(pad, width)]) if pad else kv


def _fp8_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(torch.uint8)


def _bytes_of(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.uint8).reshape(*x.shape[:-1], -1)


def pack_kv_v32(kv: torch.Tensor, page_size: int = 64) -> torch.Tensor:
    """Quantize ``kv [num_tokens, 576]`` to the V3.2 layout: uint8 ``[num_pages, page_size, 656]``."""
    kv = _check_input(kv, V32_D, page_size)
    nope = kv[:, :V32_NOPE].reshape(-1, V32_NOPE // V32_GROUP, V32_GROUP)
    amax = nope.abs().amax(-1)
    scale = amax / FP8_MAX  # an all-zero group (page tail) gets scale 0: its bytes are all zero
    values = _fp8_bytes(nope / torch.where(scale > 0, scale, 1.0)[..., None]).reshape(-1, V32_NOPE)
    rope = kv[:, V32_NOPE:].to(torch.bfloat16)
    out = torch.cat([values, _bytes_of(scale), _bytes_of(rope)], dim=1)
    return out.reshape(-1, page_size, V32_BYTES)


def pack_kv_v4(kv: torch.Tensor, page_size: int = 256) -> torch.Tensor:
    """Quantize ``kv [num_tokens, 512]`` to the V4 layout: uint8 ``[num_pages, v4_page_bytes(page_size)]``."""
    kv = _check_input(kv, V4_D, page_size)
    nope = kv[:, :V4_NOPE].reshape(-1, V4_NOPE // V4_GROUP, V4_GROUP)
    amax = nope.abs().amax(-1)
    # An all-zero group (page tail) gets exponent -127, i.e. scale byte 0: its bytes are all zero.
    exponent = torch.ceil(torch.log2(amax / FP8_MAX)).clamp(-127, 127)
    values = _fp8_bytes(nope * torch.exp2(-exponent)[..., None]).reshape(-1, V4_NOPE)
    rope = _bytes_of(kv[:, V4_NOPE:].to(torch.bfloat16))
    scales = torch.cat([(exponent + 127).to(torch.uint8), exponent.new_zeros(len(kv), 1).to(torch.uint8)], 1)
    num_pages = len(kv) // page_size
    page = torch.zeros(num_pages, v4_page_bytes(page_size), dtype=torch.uint8, device=kv.device)
    token_bytes = torch.cat([values, rope], dim=1).reshape(num_pages, page_size * V4_VALUE_BYTES)
    page[:, : page_size * V4_VALUE_BYTES] = token_bytes
    page[:, page_size * V4_VALUE_BYTES: page_size * V4_BYTES] = scales.reshape(num_pages, page_size * 8)
    return page


def _as_bytes(cache: torch.Tensor) -> torch.Tensor:
    if cache.dtype == torch.float8_e4m3fn:
        return cache.view(torch.uint8)
    if cache.dtype != torch.uint8:
        raise ValueError(f"kv_cache: expected uint8 (or float8_e4m3fn) bytes, got {cache.dtype}")
    return cache


def _fp8_values(raw: torch.Tensor) -> torch.Tensor:
    return raw.contiguous().view(torch.float8_e4m3fn).float()


def _typed(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return raw.contiguous().view(dtype).float()


def gather_kv(cache: torch.Tensor, token_ids: torch.Tensor, *, layout: str, page_size: int) -> torch.Tensor:
    """Dequantize the tokens ``token_ids`` (any shape, int, all in range) to fp32 ``[*token_ids.shape, D]``.

    D is 576 for ``layout="v32"`` and 512 for ``layout="v4"``. Token id = page * page_size + offset.
    """
    cache = _as_bytes(cache)
    ids = token_ids.long().reshape(-1)
    page, off = ids // page_size, ids % page_size
    if layout == "v32":
        if cache.dim() != 3 or cache.shape[1:] != (page_size, V32_BYTES):
            raise ValueError(f"kv_cache: expected [num_pages, {page_size}, {V32_BYTES}], got {tuple(cache.shape)}")
        raw = cache[page, off]
        values = _fp8_values(raw[:, :V32_NOPE]).reshape(-1, V32_NOPE // V32_GROUP, V32_GROUP)
        scale = _typed(raw[:, V32_NOPE:V32_NOPE + 16], torch.float32)
        rope = _typed(raw[:, V32_NOPE + 16:], torch.bfloat16)
        out = torch.cat([(values * scale[..., None]).reshape(-1, V32_NOPE), rope], dim=1)
    elif layout == "v4":
        if cache.dim() != 2 or cache.shape[1] != v4_page_bytes(page_size):
            raise ValueError(f"kv_cache: expected [num_pages, {v4_page_bytes(page_size)}] for page_size "
                             f"{page_size}, got {tuple(cache.shape)}")
        cols = torch.arange(V4_VALUE_BYTES, device=cache.device)
        raw = cache[page[:, None], off[:, None] * V4_VALUE_BYTES + cols]
        scol = torch.arange(V4_NOPE // V4_GROUP, device=cache.device)
        sbytes = cache[page[:, None], page_size * V4_VALUE_BYTES + off[:, None] * 8 + scol]
        scale = torch.exp2(sbytes.float() - 127.0)
        values = _fp8_values(raw[:, :V4_NOPE]).reshape(-1, V4_NOPE // V4_GROUP, V4_GROUP)
        rope = _typed(raw[:, V4_NOPE:], torch.bfloat16)
        out = torch.cat([(values * scale[..., None]).reshape(-1, V4_NOPE), rope], dim=1)
    else:
        raise ValueError(f"layout: expected 'v32' or 'v4', got {layout!r}")
    return out.reshape(*token_ids.shape, out.shape[-1])


def unpack_kv_v32(cache: torch.Tensor, page_size: int = 64) -> torch.Tensor:
    """The exact fp32 values ``[num_pages * page_size, 576]`` of a V3.2 cache."""
    ids = torch.arange(cache.shape[0] * page_size, device=cache.device)
    return gather_kv(cache, ids, layout="v32", page_size=page_size)


def unpack_kv_v4(cache: torch.Tensor, page_size: int = 256) -> torch.Tensor:
    """The exact fp32 values ``[num_pages * page_size, 512]`` of a V4 cache."""
    ids = torch.arange(cache.shape[0] * page_size, device=cache.device)
    return gather_kv(cache, ids, layout="v4", page_size=page_size)
