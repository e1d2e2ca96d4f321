"""MQA indexer logits (DeepSeek sparse attention "lightning indexer", KERNELS.md section 3).

``logits[row, t] = sum_h w[row, h] * act((q[row, h] . K_t) * kscale_t)`` over an FP8 key cache, with
``act`` = ReLU by default (the true indexer function) or the identity (``activation="none"``);
positions a row may not see are ``-inf``.

- ``paged_mqa_logits``: ``q [B, N, H, D]`` fp8 (N = 1 + speculative drafts), ``kv_cache`` in the fused
  page layout of ``aotune.kernels.formats.index_kv`` (``page_size * D`` fp8 values then ``page_size``
  fp32 scales per page), ``weights [B*N, H]`` fp32, ``block_table [B, max_blocks]`` int32.
  ``context_lens [B]``: draft j of batch b sees ``t <= ctx[b] - N + j`` (causal over the drafts);
  ``context_lens [B, N]``: row (b, j) sees ``t < ctx[b, j]``. Row ``b*N + j`` of the
  ``[B*N, max_context_len]`` fp32 output. Tokens at or past ``max_blocks * page_size`` are never read.
- ``mqa_logits``: non-paged, ``kv [S_kv, D]`` fp8 + ``kv_scale [S_kv]``, row i sees ``t in [ks[i], ke[i])``.

Choices (where KERNELS.md is silent): the q quantization scale is folded into ``weights`` by the
caller; ``activation="none"`` runs the same per-head path without the ReLU (exact; the w-q
precompute would also be exact there, but the kernel is memory-bound, so it brings nothing);
config ``DOT="fp8"`` is an fp8 x fp8 ``tl.dot`` (sm_89, sm_90, sm_120, and the interpreter),
``DOT="upcast"`` decodes the fp8 bytes to bf16 with integer ops; on a CUDA device below sm_89 the
launcher runs ``"upcast"`` whatever the config says. Launchers do no host sync (CUDA-graph safe).
The problem key buckets the context length to the next power of two; ``ctx_form`` is "causal"
(``[B]`` lens), "per_draft" (``[B, N]`` lens) or "window" (the non-paged form: B = S_q rows,
context = S_kv, page_size ignored).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from aotune.kernels._mqa_jit import _mqa_logits_kernel, grid_of
from aotune.kernels._mqa_ref import logits_rows, paged_reference_rows
from aotune.kernels.base import Cost, Inputs, Kernel, Launch, Problem
from aotune.kernels.formats.index_kv import pack_index_kv
from aotune.kernels.space import Choice, Config, ConfigSpace

ACTIVATIONS = ("relu", "none")


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _cuda_has_fp8_dot(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (8, 9)


def _fp8_dot(config: Config, device: torch.device) -> bool:
    if config["DOT"] not in ("fp8", "upcast"):
        raise ValueError(f"config: DOT must be 'fp8' or 'upcast', got {config['DOT']!r}")
    if config["DOT"] == "upcast":
        return False
    return device.type != "cuda" or _cuda_has_fp8_dot(device.index if device.index is not None else 0)


def _as_fp8_bytes(name: str, t: torch.Tensor, dims: int) -> torch.Tensor:
    if t.dtype not in (torch.float8_e4m3fn, torch.uint8):
        raise ValueError(f"{name}: expected float8_e4m3fn or its uint8 view, got {t.dtype}")
    _check(name, t, t.dtype, dims)
    return t.view(torch.uint8)


def _check(name: str, t: torch.Tensor, dtype: torch.dtype, dims: int) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != dims:
        got = f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a {dims}-D {dtype} tensor, got {got}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous")


def _check_common(q8: torch.Tensor, weights: torch.Tensor, rows: int, activation: str,
                  devices: dict[str, torch.Tensor]) -> None:
    H, D = q8.shape[-2:]
    if D < 16 or D & (D - 1):
        raise ValueError(f"q: head dim D={D} must be a power of two >= 16")
    if tuple(weights.shape) != (rows, H):
        raise ValueError(f"weights: expected shape {(rows, H)}, got {tuple(weights.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: must be one of {ACTIVATIONS}, got {activation!r}")
    for name, t in devices.items():
        if t.device != q8.device:
            raise ValueError(f"{name}: on {t.device}, q on {q8.device}")


def _paged_checked(q: torch.Tensor, kv_cache: torch.Tensor, weights: torch.Tensor, context_lens: torch.Tensor,
                   block_table: torch.Tensor, max_context_len: int, page_size: int,
                   activation: str) -> torch.Tensor:
    """Validate the paged arguments; returns q as uint8."""
    q8 = _as_fp8_bytes("q", q, 4)
    B, N, H, D = q8.shape
    _check("kv_cache", kv_cache, torch.uint8, 2)
    _check("weights", weights, torch.float32, 2)
    _check("block_table", block_table, torch.int32, 2)
    if context_lens.dtype != torch.int32 or tuple(context_lens.shape) not in ((B,), (B, N)):
        raise ValueError(f"context_lens: expected int32 of shape {(B,)} or {(B, N)}, got "
                         f"{context_lens.dtype} {tuple(context_lens.shape)}")
    if not context_lens.is_contiguous():
        raise ValueError("context_lens: must be contiguous")
    if not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size: must be a positive int, got {page_size!r}")
    if kv_cache.shape[1] != page_size * (D + 4):
        raise ValueError(f"kv_cache: pages of {kv_cache.shape[1]} bytes, expected page_size * (D + 4) = "
                         f"{page_size * (D + 4)}")
    if block_table.shape[0] != B:
        raise ValueError(f"block_table: expected {B} rows, got {block_table.shape[0]}")
    if not isinstance(max_context_len, int) or max_context_len < 0:
        raise ValueError(f"max_context_len: must be a non-negative int, got {max_context_len!r}")
    _check_common(q8, weights, B * N, activation, {"kv_cache": kv_cache, "weights": weights,
                                                    "context_lens": context_lens, "block_table": block_table})
    return q8


def _tile_kwargs(config: Config, fp8_dot: bool, relu: bool) -> dict[str, Any]:
    return dict(BLOCK_N=config["BLOCK_N"], BLOCK_H=config["BLOCK_H"], TILES=config["TILES_PER_PROG"],
                FP8_DOT=fp8_dot, RELU=relu, num_warps=config["num_warps"], num_stages=config["num_stages"])


def _paged_launch(q8: torch.Tensor, kv_cache: torch.Tensor, weights: torch.Tensor, context_lens: torch.Tensor,
                  block_table: torch.Tensor, out: torch.Tensor, page_size: int, relu: bool, fp8_dot: bool,
                  config: Config) -> tuple[Launch, tuple[int, int]]:
    B, N, H, D = q8.shape
    num_cols = out.shape[1]
    kv_len = min(num_cols, block_table.shape[1] * page_size)
    per_draft = context_lens.dim() == 2
    args = (q8, kv_cache, kv_cache.view(torch.float32), weights, out, block_table, context_lens, context_lens,
            num_cols, kv_len, block_table.shape[1], block_table.stride(0), N if per_draft else 0)
    kwargs = dict(H=H, D=D, N=N, ROWS=_pow2(N), PAGED=True, CAUSAL=not per_draft, PAGE_SIZE=page_size,
                  **_tile_kwargs(config, fp8_dot, relu))
    return Launch(_mqa_logits_kernel, args, kwargs), grid_of(B, num_cols, config["BLOCK_N"], config["TILES_PER_PROG"])


def paged_mqa_logits(q: torch.Tensor, kv_cache: torch.Tensor, weights: torch.Tensor, context_lens: torch.Tensor,
                     block_table: torch.Tensor, max_context_len: int, *, page_size: int = 64,
                     activation: str = "relu", config: Config | None = None) -> torch.Tensor:
    """Indexer logits over a paged FP8 cache: fp32 ``[B*N, max_context_len]`` (see the module docstring)."""
    q8 = _paged_checked(q, kv_cache, weights, context_lens, block_table, max_context_len, page_size, activation)
    B, N, H, D = q8.shape
    if config is None:
        from aotune.kernels.runtime import resolve_config
        form = "per_draft" if context_lens.dim() == 2 else "causal"
        config = resolve_config(KERNEL, MqaLogitsProblem(B, N, H, D, _pow2(max(max_context_len, 1)),
                                                         page_size, form), q8.device)
    out = torch.empty((B * N, max_context_len), dtype=torch.float32, device=q8.device)
    if out.numel() == 0:
        return out
    launch, grid = _paged_launch(q8, kv_cache, weights, context_lens, block_table, out, page_size,
                                 activation == "relu", _fp8_dot(config, q8.device), config)
    launch.fn[grid](*launch.args, **launch.kwargs)
    return out


def _window_checked(q: torch.Tensor, kv: torch.Tensor, kv_scale: torch.Tensor, weights: torch.Tensor,
                    ks: torch.Tensor, ke: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the non-paged arguments; returns q and kv as uint8."""
    q8 = _as_fp8_bytes("q", q, 3)
    kv8 = _as_fp8_bytes("kv", kv, 2)
    S_q, H, D = q8.shape
    if kv8.shape[1] != D:
        raise ValueError(f"kv: head dim {kv8.shape[1]} differs from q's {D}")
    _check("kv_scale", kv_scale, torch.float32, 1)
    if kv_scale.shape[0] != kv8.shape[0]:
        raise ValueError(f"kv_scale: expected {kv8.shape[0]} scales, got {kv_scale.shape[0]}")
    _check("weights", weights, torch.float32, 2)
    for name, t in (("ks", ks), ("ke", ke)):
        _check(name, t, torch.int32, 1)
        if t.shape[0] != S_q:
            raise ValueError(f"{name}: expected {S_q} entries, got {t.shape[0]}")
    _check_common(q8, weights, S_q, activation, {"kv": kv, "kv_scale": kv_scale, "weights": weights,
                                                 "ks": ks, "ke": ke})
    return q8, kv8


def _window_launch(q8: torch.Tensor, kv8: torch.Tensor, kv_scale: torch.Tensor, weights: torch.Tensor,
                   ks: torch.Tensor, ke: torch.Tensor, out: torch.Tensor, relu: bool, fp8_dot: bool,
                   config: Config) -> tuple[Launch, tuple[int, int]]:
    S_q, H, D = q8.shape
    S_kv = kv8.shape[0]
    args = (q8, kv8, kv_scale, weights, out, ks, ks, ke, S_kv, S_kv, 0, 0, 0)
    kwargs = dict(H=H, D=D, N=1, ROWS=1, PAGED=False, CAUSAL=False, PAGE_SIZE=1,
                  **_tile_kwargs(config, fp8_dot, relu))
    return Launch(_mqa_logits_kernel, args, kwargs), grid_of(S_q, S_kv, config["BLOCK_N"], config["TILES_PER_PROG"])


def mqa_logits(q: torch.Tensor, kv: torch.Tensor, kv_scale: torch.Tensor, weights: torch.Tensor,
               ks: torch.Tensor, ke: torch.Tensor, *, activation: str = "relu",
               config: Config | None = None) -> torch.Tensor:
    """Non-paged indexer logits: fp32 ``[S_q, S_kv]``, row i finite on ``[ks[i], ke[i])`` only."""
    q8, kv8 = _window_checked(q, kv, kv_scale, weights, ks, ke, activation)
    S_q, H, D = q8.shape
    if config is None:
        from aotune.kernels.runtime import resolve_config
        problem = MqaLogitsProblem(S_q, 1, H, D, _pow2(max(kv8.shape[0], 1)), 0, "window")
        config = resolve_config(KERNEL, problem, q8.device)
    out = torch.empty((S_q, kv8.shape[0]), dtype=torch.float32, device=q8.device)
    if out.numel() == 0:
        return out
    launch, grid = _window_launch(q8, kv8, kv_scale, weights, ks, ke, out, activation == "relu",
                                  _fp8_dot(config, q8.device), config)
    launch.fn[grid](*launch.args, **launch.kwargs)
    return out


def paged_mqa_logits_ref(q: torch.Tensor, kv_cache: torch.Tensor, weights: torch.Tensor,
                         context_lens: torch.Tensor, block_table: torch.Tensor, max_context_len: int, *,
                         page_size: int = 64, activation: str = "relu",
                         config: Config | None = None) -> torch.Tensor:
    """fp32 PyTorch reference of ``paged_mqa_logits`` (the formula, batch entry by batch entry)."""
    q8 = _paged_checked(q, kv_cache, weights, context_lens, block_table, max_context_len, page_size, activation)
    return paged_reference_rows(q8, kv_cache, weights, context_lens, block_table, max_context_len, page_size,
                                activation == "relu")


def mqa_logits_ref(q: torch.Tensor, kv: torch.Tensor, kv_scale: torch.Tensor, weights: torch.Tensor,
                   ks: torch.Tensor, ke: torch.Tensor, *, activation: str = "relu",
                   config: Config | None = None) -> torch.Tensor:
    """fp32 PyTorch reference of ``mqa_logits``."""
    q8, kv8 = _window_checked(q, kv, kv_scale, weights, ks, ke, activation)
    keys = kv8.view(torch.float8_e4m3fn).float() * kv_scale[:, None]
    out = logits_rows(q8.view(torch.float8_e4m3fn).float(), keys, weights, activation == "relu")
    t = torch.arange(kv8.shape[0], device=out.device)
    valid = (t[None, :] >= ks.long()[:, None]) & (t[None, :] < ke.long()[:, None])
    return torch.where(valid, out, torch.full_like(out, float("-inf")))


@dataclass(frozen=True)
class MqaLogitsProblem(Problem):
    """Problem key. ``context``: max_context_len (paged) or S_kv (window), bucketed to a power of two
    by the launchers; ``ctx_form``: "causal", "per_draft" or "window" (then B = S_q, N = 1)."""

    B: int
    N: int
    H: int
    D: int
    context: int
    page_size: int = 64
    ctx_form: str = "causal"


def _acc_registers(config: Config, problem: MqaLogitsProblem) -> str | None:
    regs = config["BLOCK_N"] * _pow2(problem.N) * config["BLOCK_H"] // (32 * config["num_warps"])
    if regs > 128:
        return f"dot result needs {regs} fp32 registers per thread (> 128)"
    return None


def _tiles_fit_problem(config: Config, problem: MqaLogitsProblem) -> str | None:
    if config["BLOCK_H"] > max(16, _pow2(problem.H)):
        return f"BLOCK_H {config['BLOCK_H']} exceeds H={problem.H} rounded up to a power of two"
    if config["BLOCK_N"] * config["TILES_PER_PROG"] > max(config["BLOCK_N"], _pow2(problem.context)):
        return f"chunk BLOCK_N * TILES_PER_PROG exceeds the context {problem.context}"
    if problem.ctx_form not in ("causal", "per_draft", "window"):
        return f"unknown ctx_form {problem.ctx_form!r}"
    return None


SPACE = ConfigSpace(
    params={
        "BLOCK_N": Choice(32, 64, 128, 256), "BLOCK_H": Choice(16, 32, 64),
        "TILES_PER_PROG": Choice(1, 2, 4, 8, 16), "DOT": Choice("fp8", "upcast"),
        "num_warps": Choice(4, 8), "num_stages": Choice(1, 2, 3, 4),
    },
    default={"BLOCK_N": 64, "BLOCK_H": 64, "TILES_PER_PROG": 4, "DOT": "fp8", "num_warps": 4, "num_stages": 2},
    constraints=(_tiles_fit_problem, _acc_registers),
)


def _random_fp8(shape: tuple[int, ...], gen: torch.Generator, device: str) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=device).to(torch.float8_e4m3fn)


def _random_cache(num_tokens: int, D: int, page_size: int, gen: torch.Generator, device: str) -> torch.Tensor:
    """A packed cache of random keys, built a chunk of pages at a time to bound temporary memory."""
    num_pages = -(-num_tokens // page_size)
    step = max(1, (1 << 20) // page_size)
    return torch.cat([pack_index_kv(torch.randn(min(step, num_pages - p) * page_size, D, generator=gen,
                                                device=device), page_size)
                      for p in range(0, num_pages, step)])


def make_inputs(problem: MqaLogitsProblem, seed: int, device: str) -> Inputs:
    """Seeded random inputs; paged: every context is ``problem.context``, pages randomly permuted."""
    gen = torch.Generator(device=device).manual_seed(seed)
    B, N, H, D, T = problem.B, problem.N, problem.H, problem.D, problem.context
    weights = torch.randn(B * N, H, generator=gen, device=device) / H ** 0.5
    if problem.ctx_form == "window":
        kv = torch.randn(T, D, generator=gen, device=device)
        scale = kv.abs().amax(dim=1) / 448.0
        ke = torch.arange(T - B + 1, T + 1, device=device).clamp_min(1).to(torch.int32)
        return {"q": _random_fp8((B, H, D), gen, device), "kv": (kv / scale[:, None]).to(torch.float8_e4m3fn),
                "kv_scale": scale, "weights": weights, "ks": torch.zeros_like(ke), "ke": ke}
    blocks = -(-T // problem.page_size)
    perm = torch.randperm(B * blocks, generator=gen, device=device).to(torch.int32)
    lens = torch.full((B,), T, dtype=torch.int32, device=device)
    if problem.ctx_form == "per_draft":
        lens = (lens[:, None] - N + 1 + torch.arange(N, device=device)[None, :]).clamp_min(0).to(torch.int32)
    return {"q": _random_fp8((B, N, H, D), gen, device),
            "kv_cache": _random_cache(B * blocks * problem.page_size, D, problem.page_size, gen, device),
            "weights": weights, "context_lens": lens.contiguous(), "block_table": perm.view(B, blocks),
            "max_context_len": T, "page_size": problem.page_size}


def launches(problem: MqaLogitsProblem, config: Config) -> list[Launch]:
    """The launch ``KERNEL.run`` does for ``make_inputs(problem)`` (on an fp8-capable target for DOT="fp8")."""
    meta = torch.device("meta")
    B, N, H, D, T, ps = problem.B, problem.N, problem.H, problem.D, problem.context, problem.page_size

    def empty(*shape: int, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=meta)

    weights = empty(B * N, H, dtype=torch.float32)
    out = empty(B * N, T, dtype=torch.float32)
    if problem.ctx_form == "window":
        ke = empty(B, dtype=torch.int32)
        launch, _ = _window_launch(empty(B, H, D), empty(T, D), empty(T, dtype=torch.float32), weights, ke, ke,
                                   out, True, config["DOT"] == "fp8", config)
        return [launch]
    blocks = -(-T // ps)
    lens = empty(B, N, dtype=torch.int32) if problem.ctx_form == "per_draft" else empty(B, dtype=torch.int32)
    launch, _ = _paged_launch(empty(B, N, H, D), empty(B * blocks, ps * (D + 4)), weights, lens,
                              empty(B, blocks, dtype=torch.int32), out, ps, True, config["DOT"] == "fp8", config)
    return [launch]


def cost(problem: MqaLogitsProblem) -> Cost:
    """Bytes: keys + scales read once per row group, logits written, q/w read; FLOPs of the q.K dots."""
    B, N, H, D, T = problem.B, problem.N, problem.H, problem.D, problem.context
    kv_bytes = (T * (D + 4) + (0 if problem.ctx_form == "window" else 4 * -(-T // problem.page_size))) * \
        (1 if problem.ctx_form == "window" else B)
    return Cost(bytes=kv_bytes + B * N * (T * 4 + H * (D + 4)), flops=2 * B * N * H * D * T)


def _run(inputs: Inputs, config: Config) -> Any:
    if "ks" in inputs:
        return mqa_logits(**inputs, config=config)
    return paged_mqa_logits(**inputs, config=config)


def _reference(inputs: Inputs) -> Any:
    if "ks" in inputs:
        return mqa_logits_ref(**inputs)
    return paged_mqa_logits_ref(**inputs)


KERNEL = Kernel(
    name="mqa_logits",
    problem_type=MqaLogitsProblem,
    space=SPACE,
    make_inputs=make_inputs,
    run=_run,
    reference=_reference,
    launches=launches,
    cost=cost,
    tolerance=1e-2,
    source_modules=(__name__, "aotune.kernels._mqa_jit", "aotune.kernels._mqa_ref", "aotune.kernels.formats.index_kv"),
    timing="graph",
)
