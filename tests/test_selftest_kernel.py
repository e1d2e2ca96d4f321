from __future__ import annotations

import pytest
import torch

from aotune.kernels import get_kernel, rel_error
from aotune.kernels.selftest import matmul, matmul_ref


@pytest.mark.parametrize("m,n,k", [(1, 33, 40), (70, 45, 100), (64, 64, 64)])
def test_matmul_matches_reference_on_odd_shapes(m: int, n: int, k: int) -> None:
    gen = torch.Generator().manual_seed(m * 1000 + n)
    a = torch.randn(m, k, generator=gen).bfloat16()
    b = torch.randn(k, n, generator=gen).bfloat16()
    config = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 2}
    assert rel_error(matmul(a, b, config=config), matmul_ref(a, b)) < 1e-2


def test_wrong_fault_is_detected() -> None:
    kernel = get_kernel("selftest")
    inputs = kernel.make_inputs(kernel.problem({"M": 32, "N": 32, "K": 32}), 0, "cpu")
    config = dict(kernel.space.default, fault="wrong")
    assert kernel.compare(kernel.run(inputs, config), kernel.reference(inputs)) > 0.1


def test_matmul_validates_arguments() -> None:
    a = torch.randn(4, 8).bfloat16()
    with pytest.raises(ValueError, match="b: inner dimensions"):
        matmul(a, torch.randn(7, 4).bfloat16())
    with pytest.raises(ValueError, match="a: expected a 2-D bfloat16"):
        matmul(a.float(), torch.randn(8, 4).bfloat16())


def test_inputs_are_seeded_and_not_zero() -> None:
    kernel = get_kernel("selftest")
    problem = kernel.problem({"M": 8, "N": 8, "K": 8})
    one, two, other = (kernel.make_inputs(problem, s, "cpu") for s in (1, 1, 2))
    assert torch.equal(one["a"], two["a"]) and not torch.equal(one["a"], other["a"])
    assert one["a"].abs().sum() > 0
