"""The fused FP8 indexer K cache layout: page_size*D fp8 values, then page_size fp32 scales per page."""
from __future__ import annotations

import pytest
import torch

from aotune.kernels import rel_error
from aotune.kernels.formats.index_kv import pack_index_kv, split_index_kv, unpack_index_kv


def test_page_layout_bytes() -> None:
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(10, 16, generator=gen) * 3
    cache = pack_index_kv(k, page_size=4)
    assert cache.dtype == torch.uint8 and cache.shape == (3, 4 * (16 + 4))
    scale = k.abs().amax(dim=1) / 448.0
    fp8 = (k / scale[:, None]).to(torch.float8_e4m3fn).view(torch.uint8)
    for t in range(10):
        page, slot = divmod(t, 4)
        assert torch.equal(cache[page, slot * 16:(slot + 1) * 16], fp8[t])
        got = cache[page, 64 + 4 * slot:64 + 4 * slot + 4].contiguous().view(torch.float32)
        assert got.item() == scale[t].item()


def test_padding_and_zero_token() -> None:
    k = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    k[2] = 0.0
    values, scales = split_index_kv(pack_index_kv(k, page_size=8), page_size=8)
    assert values.shape == (1, 8, 32) and scales.shape == (1, 8)
    assert scales[0, 2].item() == 1.0 and int(values[0, 2].sum()) == 0
    assert torch.equal(scales[0, 5:], torch.ones(3)) and int(values[0, 5:].sum()) == 0


def test_unpack_is_exact_dequantization() -> None:
    k = torch.randn(37, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cache = pack_index_kv(k, page_size=16)
    values, scales = split_index_kv(cache, page_size=16)
    keys = unpack_index_kv(cache, page_size=16)
    assert keys.shape == (48, 64) and keys.dtype == torch.float32
    manual = values.view(torch.float8_e4m3fn).float() * scales[:, :, None]
    assert torch.equal(keys, manual.reshape(48, 64))
    assert rel_error(keys[:37], k.float()) < 0.05  # fp8 e4m3 rounding only


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="k:"):
        pack_index_kv(torch.randn(8), page_size=4)
    with pytest.raises(ValueError, match="page_size"):
        pack_index_kv(torch.randn(8, 16), page_size=0)
    with pytest.raises(ValueError, match="cache:"):
        split_index_kv(torch.zeros(2, 81, dtype=torch.uint8), page_size=4)
    with pytest.raises(ValueError, match="cache:"):
        split_index_kv(torch.zeros(2, 80, dtype=torch.float32), page_size=4)
