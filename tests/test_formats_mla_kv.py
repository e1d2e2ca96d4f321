"""FP8 MLA KV-cache formats: byte layouts, exact round trips, gather, errors."""
from __future__ import annotations

import pytest
import torch

from aotune.kernels.formats.mla_kv import (
    gather_kv, pack_kv_v4, pack_kv_v32, unpack_kv_v4, unpack_kv_v32, v4_page_bytes,
)


def _kv(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) * torch.logspace(-2, 2, d)[torch.randperm(d, generator=gen)]


def test_v32_byte_layout_and_values() -> None:
    kv = _kv(70, 576, 0)
    cache = pack_kv_v32(kv, page_size=64)
    assert cache.dtype == torch.uint8 and cache.shape == (2, 64, 656)
    tok = cache.reshape(-1, 656)[:70]
    scales = tok[:, 512:528].contiguous().view(torch.float32)
    amax = kv[:, :512].reshape(70, 4, 128).abs().amax(-1)
    torch.testing.assert_close(scales, amax / 448.0)
    rope = tok[:, 528:].contiguous().view(torch.bfloat16)
    assert torch.equal(rope, kv[:, 512:].to(torch.bfloat16))
    values = tok[:, :512].contiguous().view(torch.float8_e4m3fn).float().reshape(70, 4, 128)
    assert torch.equal(unpack_kv_v32(cache)[:70, :512], (values * scales[..., None]).reshape(70, 512))
    assert torch.count_nonzero(cache.reshape(-1, 656)[70:]) == 0  # tail of the last page
    rel = (unpack_kv_v32(cache)[:70] - kv).norm() / kv.norm()
    assert rel < 0.04


@pytest.mark.parametrize("page_size", [64, 256, 7])
def test_v4_byte_layout_and_values(page_size: int) -> None:
    n = 2 * page_size + 3
    kv = _kv(n, 512, 1)
    cache = pack_kv_v4(kv, page_size=page_size)
    page_bytes = v4_page_bytes(page_size)
    assert page_bytes % 576 == 0 and page_bytes >= page_size * 584 > page_bytes - 576
    assert cache.shape == (3, page_bytes)
    t = page_size + 5  # token 5 of page 1
    page = cache[1]
    scale_bytes = page[page_size * 576 + 5 * 8: page_size * 576 + 6 * 8]
    assert scale_bytes[7] == 0
    scale = torch.exp2(scale_bytes[:7].float() - 127)
    amax = kv[t, :448].reshape(7, 64).abs().amax(-1)
    assert torch.all(amax / scale <= 448) and torch.all(amax / scale > 224)  # smallest power of two
    rope = page[5 * 576 + 448: 6 * 576].contiguous().view(torch.bfloat16)
    assert torch.equal(rope, kv[t, 448:].to(torch.bfloat16))
    assert torch.count_nonzero(page[page_size * 584:]) == 0  # page padding
    assert torch.count_nonzero(cache[2, 3 * 576: page_size * 576]) == 0  # tail tokens of the last page
    out = unpack_kv_v4(cache, page_size=page_size)
    assert out.shape == (3 * page_size, 512)
    assert (out[:n] - kv).norm() / kv.norm() < 0.04


def test_round_trip_is_exact() -> None:
    kv32, kv4 = _kv(100, 576, 2), _kv(100, 512, 3)
    c32, c4 = pack_kv_v32(kv32, 16), pack_kv_v4(kv4, 16)
    assert torch.equal(pack_kv_v32(unpack_kv_v32(c32, 16), 16), c32)
    # v4 may pick a smaller power of two when fp8 rounding lowered a group's amax: values stay exact.
    assert torch.equal(unpack_kv_v4(pack_kv_v4(unpack_kv_v4(c4, 16), 16), 16), unpack_kv_v4(c4, 16))


def test_gather_matches_unpack_and_padded_pages() -> None:
    cache = pack_kv_v32(_kv(128, 576, 4), 32)
    padded = torch.zeros(4, 33, 656, dtype=torch.uint8)
    padded[:, :32] = cache
    view = padded[:, :32]  # page stride 33 * 656: pages padded
    ids = torch.tensor([[0, 127], [45, 64]])
    torch.testing.assert_close(gather_kv(view, ids, layout="v32", page_size=32), unpack_kv_v32(cache, 32)[ids])
    c4 = pack_kv_v4(_kv(40, 512, 5), 16)
    torch.testing.assert_close(gather_kv(c4.view(torch.float8_e4m3fn), ids % 48, layout="v4", page_size=16),
                               unpack_kv_v4(c4, 16)[ids % 48])


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="kv"):
        pack_kv_v32(torch.randn(4, 512))
    with pytest.raises(ValueError, match="page_size"):
        pack_kv_v4(torch.randn(4, 512), page_size=0)
    with pytest.raises(ValueError, match="kv_cache"):
        unpack_kv_v4(pack_kv_v4(torch.randn(4, 512), 64), page_size=256)
    with pytest.raises(ValueError, match="layout"):
        gather_kv(pack_kv_v32(torch.randn(4, 576)), torch.zeros(1, dtype=torch.long), layout="v3", page_size=64)
