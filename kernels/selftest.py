"""The built-in ``selftest`` kernel: a tiled bf16 matmul ``c = a @ b`` with fp32 accumulation.

It exists to exercise the tuner end to end (CPU interpreter or GPU) and to prove its fault handling:
the baseline set ``faults`` holds opt-in configs that fail on purpose (one does not compile, one
computes a wrong result, one hangs, one kills its process). They are never part of the default search.
Its space has tiles whose shared memory exceeds sm_120's 101,376 bytes while fitting sm_90's 232,448.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from aotune.kernels.base import Cost, Inputs, Kernel, Launch, Problem
from aotune.kernels.space import Choice, Config, ConfigSpace

FAULTS = {"none": 0, "compile": 1, "wrong": 2, "hang": 3, "kill": 4}


@triton.jit
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, flag_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    FAULT: tl.constexpr,
):
    tl.static_assert(FAULT != 1, "selftest fault 'compile': this config fails to compile on purpose")
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(offs_m[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    if FAULT == 2:
        acc = acc * 1.5
    if FAULT == 3:
        while tl.load(flag_ptr) == 0:
            acc += 1.0
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, acc.to(tl.bfloat16),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def _launch(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, flag: torch.Tensor, config: Config) -> Launch:
    M, K = a.shape
    N = b.shape[1]
    fault = config.get("fault", "none")
    if fault not in FAULTS:
        raise ValueError(f"config: unknown fault {fault!r}; known: {sorted(FAULTS)}")
    args = (a, b, c, flag, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
    kwargs = dict(
        BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"],
        GROUP_M=config["GROUP_M"], FAULT=FAULTS[fault],
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return Launch(_matmul_kernel, args, kwargs)


def matmul(a: torch.Tensor, b: torch.Tensor, *, config: Config | None = None) -> torch.Tensor:
    """``a @ b`` for bf16 ``a [M, K]`` and ``b [K, N]``, fp32 accumulation, bf16 result."""
    for name, t in (("a", a), ("b", b)):
        if t.dtype != torch.bfloat16 or t.dim() != 2:
            raise ValueError(f"{name}: expected a 2-D bfloat16 tensor, got {t.dtype} of shape {tuple(t.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"b: inner dimensions differ, a is {tuple(a.shape)} and b is {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"b: on {b.device}, a on {a.device}")
    if config is None:
        from aotune.kernels.runtime import resolve_config
        config = resolve_config(KERNEL, MatmulProblem(a.shape[0], b.shape[1], a.shape[1]), a.device)
    if config.get("fault") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)  # simulates a config that takes its process down
    c = torch.empty((a.shape[0], b.shape[1]), dtype=torch.bfloat16, device=a.device)
    flag = torch.zeros(1, dtype=torch.int32, device=a.device)
    launch = _launch(a, b, c, flag, config)
    grid = (triton.cdiv(a.shape[0], config["BLOCK_M"]) * triton.cdiv(b.shape[1], config["BLOCK_N"]),)
    launch.fn[grid](*launch.args, **launch.kwargs)
    return c


def matmul_ref(a: torch.Tensor, b: torch.Tensor, *, config: Config | None = None) -> torch.Tensor:
    """fp32 reference of ``matmul`` (the result stays fp32)."""
    return a.float() @ b.float()


@dataclass(frozen=True)
class MatmulProblem(Problem):
    M: int
    N: int
    K: int


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _tile_not_larger_than_problem(config: Config, problem: MatmulProblem) -> str | None:
    if config["BLOCK_M"] > max(16, _next_pow2(problem.M)):
        return f"BLOCK_M {config['BLOCK_M']} exceeds M={problem.M} rounded up to a power of two"
    if config["BLOCK_N"] > max(32, _next_pow2(problem.N)):
        return f"BLOCK_N {config['BLOCK_N']} exceeds N={problem.N} rounded up to a power of two"
    return None


SPACE = ConfigSpace(
    params={
        "BLOCK_M": Choice(16, 32, 64, 128), "BLOCK_N": Choice(32, 64, 128, 256),
        "BLOCK_K": Choice(32, 64, 128), "GROUP_M": Choice(1, 8),
        "num_warps": Choice(4, 8), "num_stages": Choice(1, 2, 3, 4),
    },
    default={"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 2},
    constraints=(_tile_not_larger_than_problem,),
    baselines={
        "faults": [
            {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1, "num_warps": 4, "num_stages": 2, "fault": f}
            for f in ("compile", "wrong", "hang", "kill")
        ],
    },
)


def make_inputs(problem: MatmulProblem, seed: int, device: str) -> Inputs:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(problem.M, problem.K, generator=gen).to(device=device, dtype=torch.bfloat16)
    b = torch.randn(problem.K, problem.N, generator=gen).to(device=device, dtype=torch.bfloat16)
    return {"a": a, "b": b}


def launches(problem: MatmulProblem, config: Config) -> list[Launch]:
    meta = torch.device("meta")
    a = torch.empty(problem.M, problem.K, dtype=torch.bfloat16, device=meta)
    b = torch.empty(problem.K, problem.N, dtype=torch.bfloat16, device=meta)
    c = torch.empty(problem.M, problem.N, dtype=torch.bfloat16, device=meta)
    flag = torch.empty(1, dtype=torch.int32, device=meta)
    return [_launch(a, b, c, flag, config)]


def cost(problem: MatmulProblem) -> Cost:
    M, N, K = problem.M, problem.N, problem.K
    return Cost(bytes=2 * (M * K + K * N + M * N), flops=2 * M * N * K)


def _run(inputs: Inputs, config: Config) -> Any:
    return matmul(inputs["a"], inputs["b"], config=config)


def _reference(inputs: Inputs) -> Any:
    return matmul_ref(inputs["a"], inputs["b"])


KERNEL = Kernel(
    name="selftest",
    problem_type=MatmulProblem,
    space=SPACE,
    make_inputs=make_inputs,
    run=_run,
    reference=_reference,
    launches=launches,
    cost=cost,
    tolerance=1e-2,
    source_modules=(__name__,),
    timing="graph",
)
