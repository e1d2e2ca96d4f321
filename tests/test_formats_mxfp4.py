"""MXFP4 format: E2M1 nibble order and values, E8M0 scales, exact round trip, rounding, validation."""
from __future__ import annotations

import math

import pytest
import torch

from aotune.kernels.formats.mxfp4 import E2M1_VALUES, dequantize_mxfp4, quantize_mxfp4


def _random_mxfp4(shape: tuple[int, ...], k: int, group: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (*shape, k // 2), generator=gen, dtype=torch.uint8)
    scales = torch.randint(100, 141, (*shape, k // group), generator=gen, dtype=torch.uint8)
    return packed, scales


def test_dequantize_every_byte_low_nibble_first() -> None:
    packed = torch.arange(256, dtype=torch.uint8).reshape(8, 32)  # K = 64, two groups of 32
    scales = torch.tensor([[127, 128]] * 8, dtype=torch.uint8)
    out = dequantize_mxfp4(packed, scales)
    for byte in range(256):
        row, col = divmod(byte, 32)
        factor = 1.0 if 2 * col < 32 else 2.0
        assert out[row, 2 * col].item() == E2M1_VALUES[byte & 0xF] * factor
        assert out[row, 2 * col + 1].item() == E2M1_VALUES[byte >> 4] * factor


def test_scale_bytes_are_powers_of_two_and_255_is_nan() -> None:
    packed = torch.full((1, 16), 0x22, dtype=torch.uint8)  # every value 1.0
    scales = torch.tensor([[0, 100, 254, 255]], dtype=torch.uint8)
    out = dequantize_mxfp4(packed, scales, group_size=8)
    assert out[0, 0].item() == 2.0 ** -127
    assert out[0, 8].item() == 2.0 ** -27
    assert out[0, 16].item() == 2.0 ** 127
    assert torch.isnan(out[0, 24:]).all()


@pytest.mark.parametrize("group", [16, 32])
def test_round_trip_is_exact_on_representable_values(group: int) -> None:
    packed, scales = _random_mxfp4((3, 7), 96, group, seed=group)
    values = dequantize_mxfp4(packed, scales, group)
    packed2, scales2 = quantize_mxfp4(values, group)
    assert torch.equal(dequantize_mxfp4(packed2, scales2, group), values)
    # groups whose largest magnitude is 6 keep their scale byte
    has_six = (packed.reshape(3, 7, -1, group // 2) & 0x77).eq(0x70).any(-1) | \
        (packed.reshape(3, 7, -1, group // 2) & 0x07).eq(0x07).any(-1)
    assert torch.equal(scales2[has_six], scales[has_six])


def test_quantize_rounds_to_nearest_ties_to_even() -> None:
    row = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.75, 0.3, 4.9, -5.1] + [0.0] * 20)
    packed, scales = quantize_mxfp4(row[None, :])
    assert scales.tolist() == [[127]]
    got = dequantize_mxfp4(packed, scales)[0, :12].tolist()
    assert got == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -1.0, 0.5, 4.0, -6.0]


def test_quantize_error_of_gaussian_weights() -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(3))
    packed, scales = quantize_mxfp4(w)
    assert packed.shape == (64, 128) and scales.shape == (64, 8)
    err = ((dequantize_mxfp4(packed, scales) - w).norm() / w.norm()).item()
    assert 0.0 < err < 0.2
    zeros_packed, zeros_scales = quantize_mxfp4(torch.zeros(2, 32))
    assert torch.equal(dequantize_mxfp4(zeros_packed, zeros_scales), torch.zeros(2, 32))


def test_no_saturation_large_and_small_groups() -> None:
    w = torch.tensor([[1e30, -3e29] + [1.0] * 30, [1e-30] * 32], dtype=torch.float64)
    out = dequantize_mxfp4(*quantize_mxfp4(w))
    assert math.isclose(out[0, 0].item(), 1e30, rel_tol=0.25)
    assert math.isclose(out[1, 0].item(), 1e-30, rel_tol=0.25)


def test_validation_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="w:"):
        quantize_mxfp4(torch.ones(4, 33))
    with pytest.raises(ValueError, match="w:"):
        quantize_mxfp4(torch.tensor([[float("nan")] * 32]))
    with pytest.raises(ValueError, match="group_size"):
        quantize_mxfp4(torch.ones(4, 32), group_size=3)
    with pytest.raises(ValueError, match="packed"):
        dequantize_mxfp4(torch.ones(4, 16), torch.ones(4, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scales"):
        dequantize_mxfp4(torch.ones(4, 16, dtype=torch.uint8), torch.ones(4, 2, dtype=torch.uint8))
