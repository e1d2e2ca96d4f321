"""MXFP4 MoE: routed experts with E2M1 weights and E8M0 group scales, fused dequant + grouped GEMM.

Math and formats: KERNELS.md section 1 (``fused_moe_ref`` follows it literally). Choices where it is
silent:
- ``topk_ids`` int32 ``[M, top_k]``, ``topk_weights`` fp32; ids < 0 contribute nothing. Ids >= E raise
  ValueError, checked on the host, except while a CUDA graph is being captured (the check would
  synchronize); the kernels then treat them like negative ids (no out-of-bounds reads).
- ``layout``: "gate_up" / "up_gate" (gate rows first / up rows first) or "interleaved" (gate even rows,
  up odd rows). "swiglu_oai" always uses interleaved rows ("gate_up", the default, is read as
  interleaved; "up_gate" is an error) and ``swiglu_limit=None`` means its limit 7.
- Weights and scales are contiguous, or (KERNELS.md: "K contiguous") have rows padded apart: weight rows a
  multiple of 16 bytes apart, scale rows any pitch, experts whole rows apart (``formats.pad_rows``). Rows on a
  128-byte pitch load faster where a row's bytes are not a multiple of 128 (gpt-oss: about 3% per call on the
  H100, BENCHMARKS.md, MoE, twenty-third session); the padding is never read.
- Biases are fp32, both or neither; they are added after the bf16 rounding of ``h`` (w13_bias) and
  before the routing weight (w2_bias), as in KERNELS.md.
- Top-k sum in fp32; the order of that sum is fixed on the decode path (per-slot buffer, then a reduce
  kernel) and follows fp32 atomic adds on the prefill path and with split-K.
- The launcher allocates its workspaces per call (caching allocator; CUDA-graph safe): intermediate
  ``[M*top_k, I]`` bf16 and an fp32 buffer ``[M*top_k, K]`` (decode) or ``[M, K]`` (prefill); on the mma
  path also the first GEMM's routing for the second, ``[M*top_k, T_PAD + 1]`` int32.

Problem key: M, K (hidden), I (per-rank intermediate), E (per-rank experts), top_k, group_size,
activation, layout, has_bias. Config: PATH ("decode": no sort, grid over slots, first slot of each
expert does its work; "prefill": moe_align sort and a grid over padded BLOCK_M blocks; "gemv": the
decode grid on the FMA units, weights straight to registers, ``_moe_gemv.py``; "mma": the decode grid on
the tensor cores, up to 8 tokens of an expert per pass, E2M1 decoded into the MMA's registers, a Gluon
kernel, GPU only, ``_moe_mma.py``), BLOCK_M (rows per
tensor-core tile; on the gemv path the tokens, 1 or 2, that share one pass over an expert's weights; 8
on the mma path),
BLOCK_N (weight rows per program in both GEMMs: the first GEMM computes BLOCK_N/2 gate and BLOCK_N/2
up rows), BLOCK_K (gemv: up to 1024 for the first GEMM, clamped to I for the second), GROUP_M, SPLIT_K
(K splits of the down projection; on the gemv path of both GEMMs: the first one's fp32 partial sums
are summed in split order by an activation launch, the second's split at most I / its BLOCK_K; on the mma
path of the first GEMM only, with the same workspace and activation launch, whole BLOCK_K steps per split
and no empty split: ``mma_split_steps``), DEQ (how E2M1 meets the tensor cores: "arith" decodes and scales the weight
tile in registers, then one bf16 tl.dot per BLOCK_K; "group" decodes without scaling, one tl.dot per
scale group, the scale multiplies the fp32 partial product (less per-element work, for decode); both
run under the interpreter; "group_asm": "group" with a PTX E2M1 -> bf16x2 decode (two values per 32-bit
op; GPU only); "dot_scaled": tl.dot_scaled, GPU only, group 32; on the gemv path "arith" is the
portable fp32 decode and "group_asm" a PTX one through E4M3), num_warps, num_stages (gemv: 1 is a plain
register loop, 2-4 stream the K steps through shared memory with cp.async, ``_moe_gemv.py``; mma: 1 holds
the next step in registers, 2-4 stream the weights through a shared-memory ring, BLOCK_K 128).

Config PDL (0 or 1; gemv and mma paths, NVIDIA sm_90+): the call's launches form one programmatic-dependent-
launch chain, the second GEMM prefetching its weight rows into L2 where the active weights are small
(``_pdl.py``, ``pdl_of``). A config without the key has it off. Config DOWN_TILES (1, 2, 4, 8; mma path,
num_stages 1, K a multiple of BLOCK_N and I of BLOCK_K): each program of the second GEMM loops over that
many BLOCK_N row tiles in one software pipeline, so the next tile's weights load while one computes (at
DeepSeek-V4-Flash TP 8, I = 256 is one BLOCK_K step: one tile per program has nothing to overlap); the
same sums in the same order as one tile per program. A config without the key has 1.

Without a tuned config (``config=None`` and no bundle entry) the launcher runs ``runtime_default``: the
mma path up to M = 128 on NVIDIA sm_80+ (but the gemv path where M * I <= 512), the gemv path with the
portable decode at M <= 8 elsewhere (the interpreter, older GPUs), else the space default (measured
choices, BENCHMARKS.md).

Performance (H200, BENCHMARKS.md, eighth session): tuned, 2.3-3.9x the best SGLang hand-picked config at
every measured shape; the gemv path is fastest at M = 1, the mma path from M = 8 to 128. 18-75% of copy
bandwidth at M <= 32, short of the 80% goal: tiny problems are latency-bound (3-4 dependent launches), and
on the mma path (0.73-0.75 for DeepSeek-V4-Flash TP 1 at M = 8 and 32) the busiest unit is the L1 data pipe
(76%), then the ALU and FMA pipes (Nsight); sharing the activations through shared memory gained only 2%,
so what is left is the issue rate (2.8 instructions per weight) and load latency at 3 CTAs per SM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton

from aotune.cache_db.identity import DeviceClass
from aotune.kernels import _pdl
from aotune.kernels._moe_checks import ACTIVATIONS, LAYOUTS, check_inputs
from aotune.kernels._moe_gemv import _moe_act, _moe_gemv1, _moe_gemv2
from aotune.kernels._moe_kernels import _moe_align, _moe_gemm1, _moe_gemm2, _moe_reduce
from aotune.kernels._moe_mma import _moe_mma1, _moe_mma2
from aotune.kernels.base import Cost, Inputs, Kernel, Launch, Problem
from aotune.kernels.device import has_mma_v2, has_pdl
from aotune.kernels.formats.mxfp4 import dequantize_mxfp4
from aotune.kernels.space import Choice, Config, ConfigSpace

Tensors = dict[str, torch.Tensor]
_REDUCE_ELEMS = 4096  # fp32 values one reduce program loads at once: top-k rows x columns
_DECODE_MAX_SLOTS = 1024
_DEQ = {"arith": 0, "group": 1, "dot_scaled": 2, "group_asm": 3}


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _workspace(p: MoEProblem, cfg: Config, device: torch.device | str, ids: torch.Tensor) -> Tensors:
    """Per-call buffers of the launches (sizes depend only on the problem and the config)."""
    t, decode = p.M * p.top_k, cfg["PATH"] != "prefill"
    atomic = not decode or _down_splits(cfg, p) > 1
    dst_rows = t if decode else p.M
    ws = {
        "inter": torch.empty(t, p.I, dtype=torch.bfloat16, device=device),
        "dst": (torch.zeros if atomic else torch.empty)(dst_rows, p.K, dtype=torch.float32, device=device),
        "out": torch.empty(p.M, p.K, dtype=torch.bfloat16, device=device),
        "sorted": ids, "bexp": ids, "cursor": ids, "split_ws": ids,
    }
    if cfg["PATH"] == "mma":  # the first GEMM's routing, for the second (_moe_mma._store_route)
        ws["route"] = torch.empty(t, max(16, _pow2(t)) + 1, dtype=torch.int32, device=device)
    if _splits_first_gemm(cfg) and cfg["SPLIT_K"] > 1:  # the first GEMM's fp32 partial sums, a slab per split
        ws["split_ws"] = torch.empty(cfg["SPLIT_K"], t, 2 * p.I, dtype=torch.float32, device=device)
    if not decode:
        nb_cap = triton.cdiv(t, cfg["BLOCK_M"]) + min(t, p.E)
        ws["sorted"] = torch.empty(nb_cap * cfg["BLOCK_M"], dtype=torch.int32, device=device)
        ws["bexp"] = torch.empty(nb_cap, dtype=torch.int32, device=device)
        ws["cursor"] = torch.empty(_pow2(p.E), dtype=torch.int32, device=device)
    return ws


def _plan(ts: Tensors, p: MoEProblem, limit: float | None, scale: float, cfg: Config) -> list[tuple[Launch, tuple]]:
    """The launches (and grids) of one call; shared by the launcher and ``launches`` (meta tensors)."""
    if cfg["PATH"] == "gemv":
        gemms = _gemv_launches(ts, p, limit, cfg)
    elif cfg["PATH"] == "mma":
        gemms = _mma_launches(ts, p, limit, cfg)
    else:
        gemms = _dot_launches(ts, p, limit, cfg)
    per_token = cfg["PATH"] == "prefill"
    dst, ids = ts["dst"], ts["topk_ids"]
    topk_pad = _pow2(p.top_k)
    block = min(max(128, _REDUCE_ELEMS // topk_pad), _pow2(p.K))
    red = (dst, ids, ts["out"], p.K, p.E, p.top_k, float(scale), dst.stride(0), ts["out"].stride(0))
    kw = dict(PER_SLOT=not per_token, TOPK_PAD=topk_pad, BLOCK=block, num_warps=4)
    plan = gemms + [(Launch(_moe_reduce, red, kw), (p.M, triton.cdiv(p.K, block)))]
    chained, prefetch = pdl_of(p, cfg)
    return _chained(plan, prefetch) if chained else plan


def _chained(plan: list[tuple[Launch, tuple]], prefetch: bool) -> list[tuple[Launch, tuple]]:
    """``plan`` as one PDL chain (``_pdl``): every kernel's PDL constexpr on, every launch but the first
    with ``launch_pdl``, and the second GEMM's PREFETCH as given."""
    out = []
    for i, (launch, grid) in enumerate(plan):
        kwargs = dict(launch.kwargs, PDL=True)
        if i:
            kwargs["launch_pdl"] = True
        if launch.fn in (_moe_gemv2, _moe_mma2):
            kwargs["PREFETCH"] = prefetch
        out.append((Launch(launch.fn, launch.args, kwargs), grid))
    return out


def _bias_args(ts: Tensors, p: MoEProblem) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(b13, b2, stride_b13, stride_b2); without biases the routing weights stand in (never read)."""
    if p.has_bias:
        return ts["w13_bias"], ts["w2_bias"], ts["w13_bias"].stride(0), ts["w2_bias"].stride(0)
    return ts["topk_weights"], ts["topk_weights"], 0, 0


def _dot_launches(ts: Tensors, p: MoEProblem, limit: float | None, cfg: Config) -> list[tuple[Launch, tuple]]:
    """Tensor-core paths ("decode", "prefill"): [moe_align,] GEMM1, GEMM2."""
    t, decode, bm, bn = p.M * p.top_k, cfg["PATH"] == "decode", cfg["BLOCK_M"], cfg["BLOCK_N"]
    num_m = t if decode else triton.cdiv(t, bm) + min(t, p.E)
    per_token, split_k = not decode, cfg["SPLIT_K"]
    has_bias = p.has_bias
    b13, b2, stride_b13, stride_b2 = _bias_args(ts, p)
    tiles = dict(DECODE=decode, T_PAD=max(16, _pow2(t)) if decode else 16, BLOCK_M=bm, BLOCK_N=bn,
                 BLOCK_K=cfg["BLOCK_K"], GROUP_M=cfg["GROUP_M"], G=p.group_size,
                 DEQ=_DEQ[cfg["DEQ"]], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    ids, inter, dst = ts["topk_ids"], ts["inter"], ts["dst"]
    route = (ids, ts["sorted"], ts["bexp"])
    out: list[tuple[Launch, tuple]] = []
    if not decode:
        chunk = min(1024, max(16, _pow2(t)))
        align = (ids, ts["sorted"], ts["bexp"], ts["cursor"], t, p.E, num_m)
        out.append((Launch(_moe_align, align, dict(BLOCK_M=bm, E_PAD=_pow2(p.E), CHUNK=chunk, num_warps=4)), (1,)))
    w13, s13, w2, s2 = ts["w13"], ts["w13_scale"], ts["w2"], ts["w2_scale"]
    g1 = (ts["x"], w13, s13, b13, inter, *route, t, p.K, p.I, p.E, p.top_k, num_m,
          float("inf") if limit is None else limit, p.K, w13.stride(0), w13.stride(1), s13.stride(0), s13.stride(1),
          stride_b13, inter.stride(0))
    bk = cfg["BLOCK_K"]
    kw1 = dict(**_act_flags(p), **tiles, EVEN_K=p.K % bk == 0)
    out.append((Launch(_moe_gemm1, g1, kw1), (num_m * triton.cdiv(p.I, bn // 2),)))
    g2 = (inter, w2, s2, b2, dst, ts["topk_weights"], *route, t, p.K, p.I, p.E, p.top_k, num_m,
          inter.stride(0), w2.stride(0), w2.stride(1), s2.stride(0), s2.stride(1), stride_b2, dst.stride(0))
    kw2 = dict(HAS_BIAS=has_bias, PER_TOKEN=per_token, ATOMIC=per_token or split_k > 1, SPLIT_K=split_k, **tiles,
               EVEN_K=p.I % bk == 0)
    out.append((Launch(_moe_gemm2, g2, kw2), (num_m * triton.cdiv(p.K, bn) * split_k,)))
    return out


def _gemv_launches(ts: Tensors, p: MoEProblem, limit: float | None, cfg: Config) -> list[tuple[Launch, tuple]]:
    """FMA path ("gemv", _moe_gemv.py): GEMM1 [, activation of its K splits], GEMM2, over (slot, N tile,
    K split); bf16 pairs read as int32. TAIL_K: the step after the last whole BLOCK_K, the largest power of
    two dividing K (>= group_size)."""
    t, bn, bk, split1, split2 = p.M * p.top_k, cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["SPLIT_K"], _down_splits(cfg, p)
    bk2 = _down_block_k(cfg, p)
    b13, b2, stride_b13, stride_b2 = _bias_args(ts, p)
    tiles = dict(T_PAD=max(16, _pow2(t)), BLOCK_M=cfg["BLOCK_M"], BLOCK_N=bn, G=p.group_size,
                 ASM=cfg["DEQ"] == "group_asm", STAGES=cfg["num_stages"], num_warps=cfg["num_warps"], num_stages=1)
    x32, inter, dst, ids, split_ws = ts["x"].view(torch.int32), ts["inter"], ts["dst"], ts["topk_ids"], ts["split_ws"]
    inter32 = inter.view(torch.int32)
    w13, s13, w2, s2 = ts["w13"], ts["w13_scale"], ts["w2"], ts["w2_scale"]
    lim = float("inf") if limit is None else limit
    ws_strides = (split_ws.stride(0), split_ws.stride(1)) if split1 > 1 else (0, 0)
    g1 = (x32, w13, s13, b13, inter, split_ws, ids, t, p.K, p.I, p.E, p.top_k, lim, x32.stride(0), w13.stride(0),
          w13.stride(1), s13.stride(0), s13.stride(1), stride_b13, inter.stride(0), *ws_strides)
    kw1 = dict(**_act_flags(p), **tiles, BLOCK_K=bk, TAIL_K=min(bk, p.K & -p.K), SPLIT=split1)
    out = [(Launch(_moe_gemv1, g1, kw1), (t * triton.cdiv(p.I, bn // 2) * split1,))]
    if split1 > 1:
        out.append(_act_launch(ts, p, lim, split1))
    g2 = (inter32, w2, s2, b2, dst, ts["topk_weights"], ids, t, p.K, p.I, p.E, p.top_k, inter32.stride(0),
          w2.stride(0), w2.stride(1), s2.stride(0), s2.stride(1), stride_b2, dst.stride(0))
    kw2 = dict(HAS_BIAS=p.has_bias, ATOMIC=split2 > 1, SPLIT_K=split2, **tiles, BLOCK_K=bk2,
               TAIL_K=min(bk2, p.I & -p.I))
    out.append((Launch(_moe_gemv2, g2, kw2), (t * triton.cdiv(p.K, bn) * split2,)))
    return out


def _act_flags(p: MoEProblem) -> dict[str, Any]:
    """The constexprs of the first GEMM's epilogue (activation, gate/up row layout, biases)."""
    return dict(ACT=ACTIVATIONS[p.activation], LAYOUT=LAYOUTS[p.layout], HAS_BIAS=p.has_bias)


def _act_launch(ts: Tensors, p: MoEProblem, lim: float, splits: int) -> tuple[Launch, tuple]:
    """``_moe_act`` after a K-split first GEMM: the sum of the first ``splits`` fp32 slabs, activated, as bf16."""
    split_ws = ts["split_ws"]
    b13, _, stride_b13, _ = _bias_args(ts, p)
    block = min(1024, _pow2(p.I))
    ga = (split_ws, b13, ts["inter"], ts["topk_ids"], p.I, p.E, lim, split_ws.stride(0), split_ws.stride(1),
          stride_b13, ts["inter"].stride(0))
    grid = (p.M * p.top_k, triton.cdiv(p.I, block))
    return Launch(_moe_act, ga, dict(**_act_flags(p), SPLIT=splits, BLOCK=block, num_warps=4)), grid


def mma_split_steps(config: Config, p: MoEProblem) -> tuple[int, int]:
    """(splits launched, BLOCK_K steps per split) of the mma path's first GEMM: SPLIT_K at most, each split
    whole steps (the last one also the groups after the last whole step) and none empty."""
    steps = triton.cdiv(p.K, config["BLOCK_K"])
    per_split = triton.cdiv(steps, config["SPLIT_K"])
    return triton.cdiv(steps, per_split), per_split


def _mma_launches(ts: Tensors, p: MoEProblem, limit: float | None, cfg: Config) -> list[tuple[Launch, tuple]]:
    """Tensor-core decode path ("mma", _moe_mma.py, GPU only): GEMM1 over (slot, N tile, K split) [, the
    activation of its K splits], GEMM2 over (slot, N tile); the first slot of each expert does its work, 8
    tokens per pass; GEMM1 leaves its routing in ``route`` for GEMM2."""
    t, bn = p.M * p.top_k, cfg["BLOCK_N"]
    splits, split_steps = mma_split_steps(cfg, p)
    b13, b2, stride_b13, stride_b2 = _bias_args(ts, p)
    tiles = dict(T_PAD=max(16, _pow2(t)), BLOCK_N=bn, BLOCK_K=cfg["BLOCK_K"], STAGES=cfg["num_stages"],
                 num_warps=cfg["num_warps"])
    x, inter, dst, ids = ts["x"], ts["inter"], ts["dst"], ts["topk_ids"]
    x32, inter32 = x.view(torch.int32), inter.view(torch.int32)  # bf16 pairs, as on the gemv path
    w13, s13, w2, s2 = ts["w13"], ts["w13_scale"], ts["w2"], ts["w2_scale"]
    lim = float("inf") if limit is None else limit
    w13_32, w2_32 = w13.view(torch.int32), w2.view(torch.int32)  # weight bytes as words (strides still in bytes)
    split_ws = ts["split_ws"]
    ws_strides = (split_ws.stride(0), split_ws.stride(1)) if splits > 1 else (0, 0)
    route = ts["route"]
    g1 = (x32, w13_32, s13, b13, inter, split_ws, ids, route, t, p.K, p.I, p.E, p.top_k, lim, split_steps,
          x32.stride(0), w13.stride(0), w13.stride(1), s13.stride(0), s13.stride(1), stride_b13, inter.stride(0),
          *ws_strides)
    kw1 = dict(**_act_flags(p), **tiles, SPLIT=splits)
    g2 = (inter32, w2_32, s2, b2, dst, ts["topk_weights"], ids, route, p.K, p.I, p.E, inter32.stride(0),
          w2.stride(0), w2.stride(1), s2.stride(0), s2.stride(1), stride_b2, dst.stride(0))
    down_tiles = cfg.get("DOWN_TILES", 1)
    kw2 = dict(HAS_BIAS=p.has_bias, **tiles, **(dict(TILES=down_tiles) if down_tiles > 1 else {}))
    out = [(Launch(_moe_mma1, g1, kw1), (t, triton.cdiv(p.I, bn // 2), splits))]
    if splits > 1:
        out.append(_act_launch(ts, p, lim, splits))
    return out + [(Launch(_moe_mma2, g2, kw2), (t, triton.cdiv(triton.cdiv(p.K, bn), down_tiles)))]


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
              w2_scale: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, *,
              activation: str = "swiglu", layout: str = "gate_up", swiglu_limit: float | None = None,
              w13_bias: torch.Tensor | None = None, w2_bias: torch.Tensor | None = None,
              routed_scaling_factor: float = 1.0, group_size: int = 32,
              config: Config | None = None) -> torch.Tensor:
    """Routed-expert MoE with MXFP4 weights: ``x [M, K]`` bf16 -> ``[M, K]`` bf16 (see the module doc).

    ``w13 [E, 2I, K/2]`` / ``w13_scale [E, 2I, K/group_size]`` and ``w2 [E, K, I/2]`` /
    ``w2_scale [E, K, I/group_size]`` are uint8 MXFP4; ``config=None`` asks the runtime loader.
    """
    fields, limit = check_inputs(x, w13, w13_scale, w2, w2_scale, topk_ids, topk_weights, activation, layout,
                                 swiglu_limit, w13_bias, w2_bias, routed_scaling_factor, group_size)
    problem = MoEProblem(**fields)
    if config is None:
        from aotune.kernels.runtime import resolve_config
        config = resolve_config(KERNEL, problem, x.device)  # the loader answers only configs SPACE allows
    reason = SPACE.check(config, problem)  # an explicit config, or no valid default at all
    if reason:
        raise ValueError(f"config: {reason}")
    if not x.is_cuda and config["PATH"] == "mma":
        raise ValueError("config: PATH 'mma' is a Gluon kernel and needs a CUDA GPU (not the CPU interpreter)")
    if not x.is_cuda and config["DEQ"] in ("group_asm", "dot_scaled"):
        raise ValueError(f"config: DEQ {config['DEQ']!r} needs a CUDA GPU (not the CPU interpreter)")
    if config.get("PDL", 0) and not _pdl.supported(x.device):
        raise ValueError(f"config: PDL 1 (programmatic dependent launch) needs an NVIDIA GPU of sm_90 or later, "
                         f"not {x.device}")
    if problem.M == 0:
        return torch.empty_like(x)
    if config["PATH"] in ("gemv", "mma") and x.data_ptr() % 4:
        x = x.clone()  # these paths read bf16 pairs as int32 (a view of x at an odd element offset fails)
    ts = dict(x=x, w13=w13, w13_scale=w13_scale, w2=w2, w2_scale=w2_scale, topk_ids=topk_ids,
              topk_weights=topk_weights, w13_bias=w13_bias, w2_bias=w2_bias)
    ts.update(_workspace(problem, config, x.device, topk_ids))
    for launch, grid in _plan(ts, problem, limit, routed_scaling_factor, config):
        launch.fn[grid](*launch.args, **launch.kwargs)
    return ts["out"]


def _activation(h: torch.Tensor, activation: str, layout: str, limit: float | None) -> torch.Tensor:
    half = h.shape[-1] // 2
    if layout == "interleaved":
        g, u = h[:, 0::2], h[:, 1::2]
    elif layout == "gate_up":
        g, u = h[:, :half], h[:, half:]
    else:
        g, u = h[:, half:], h[:, :half]
    if limit is not None:
        g, u = g.clamp(max=limit), u.clamp(-limit, limit)
    if activation == "swiglu":
        return torch.nn.functional.silu(g) * u
    return g * torch.sigmoid(1.702 * g) * (u + 1.0)


def fused_moe_ref(x: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor, w2: torch.Tensor,
                  w2_scale: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, *,
                  activation: str = "swiglu", layout: str = "gate_up", swiglu_limit: float | None = None,
                  w13_bias: torch.Tensor | None = None, w2_bias: torch.Tensor | None = None,
                  routed_scaling_factor: float = 1.0, group_size: int = 32,
                  config: Config | None = None) -> torch.Tensor:
    """PyTorch reference of ``fused_moe`` (KERNELS.md, one expert at a time, fp32 math); ``config`` is ignored."""
    fields, limit = check_inputs(x, w13, w13_scale, w2, w2_scale, topk_ids, topk_weights, activation, layout,
                                 swiglu_limit, w13_bias, w2_bias, routed_scaling_factor, group_size)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    ids = topk_ids.long()
    for e in torch.unique(ids[ids >= 0]).tolist():
        tok, slot = (ids == e).nonzero(as_tuple=True)
        h = (x[tok].float() @ dequantize_mxfp4(w13[e], w13_scale[e], group_size).T).to(torch.bfloat16).float()
        if w13_bias is not None:
            h = h + w13_bias[e]
        a = _activation(h, activation, fields["layout"], limit).to(torch.bfloat16).float()
        y = a @ dequantize_mxfp4(w2[e], w2_scale[e], group_size).T
        if w2_bias is not None:
            y = y + w2_bias[e]
        out.index_add_(0, tok, y * topk_weights[tok, slot, None])
    return (out * routed_scaling_factor).to(torch.bfloat16)


@dataclass(frozen=True)
class MoEProblem(Problem):
    """Problem key: tokens M, hidden K, per-rank intermediate I, per-rank experts E, top_k, format, math."""

    M: int
    K: int
    I: int  # noqa: E741 - the name the model configs use
    E: int
    top_k: int
    group_size: int = 32
    activation: str = "swiglu"
    layout: str = "gate_up"
    has_bias: bool = False


def _slots(p: MoEProblem) -> int:
    return p.M * p.top_k


def _splits_first_gemm(config: Config) -> bool:
    """Whether SPLIT_K splits the first GEMM's K (the gemv and mma paths) rather than only the second's."""
    return config["PATH"] in ("gemv", "mma")


def _down_splits(config: Config, p: MoEProblem) -> int:
    """K splits of the second GEMM: SPLIT_K on the decode and prefill paths; on the gemv path (where SPLIT_K
    splits the first GEMM) at most I / its BLOCK_K, so that every split has a whole K step; on the mma path
    (where SPLIT_K splits only the first GEMM) none."""
    if config["PATH"] == "gemv":
        return max(1, min(config["SPLIT_K"], p.I // _down_block_k(config, p)))
    return 1 if config["PATH"] == "mma" else config["SPLIT_K"]


def _down_block_k(config: Config, p: MoEProblem) -> int:
    """BLOCK_K of the second GEMM (K = I): on the gemv path BLOCK_K clamped to I rounded up to a power of two,
    so that a long first-GEMM tile (few dependent loads per program) does not mask most of a short one."""
    if config["PATH"] == "gemv":
        return min(config["BLOCK_K"], _pow2(p.I))
    return config["BLOCK_K"]


def _block_k_fits(config: Config, p: MoEProblem) -> str | None:
    if config["PATH"] == "mma":
        return None  # _mma_fits
    if config["BLOCK_K"] % p.group_size:
        return f"BLOCK_K {config['BLOCK_K']} is not a multiple of group_size {p.group_size}"
    if config["PATH"] == "gemv":
        if config["BLOCK_K"] > max(64, _pow2(p.K)):
            return f"BLOCK_K {config['BLOCK_K']} exceeds K rounded up to a power of two"
    elif config["BLOCK_K"] > min(256, max(64, _pow2(min(p.K, p.I)))):
        return f"BLOCK_K {config['BLOCK_K']} exceeds 256 or min(K, I) rounded up to a power of two"
    if config["DEQ"] == "dot_scaled" and p.group_size != 32:
        return "DEQ dot_scaled needs group_size 32 (MX scale blocks)"
    if config["DEQ"] in ("group", "group_asm") and p.group_size < 32 and config["PATH"] != "gemv":
        return "DEQ group needs group_size >= 32 (one tl.dot of K >= 16 per nibble half)"
    return None


def _mma_fits(config: Config, p: MoEProblem) -> str | None:
    """The mma path works on whole 32-value scale groups, 16-row MMA tiles per warp (_moe_mma.py)."""
    if config["PATH"] != "mma":
        return None
    if p.group_size != 32 or p.K % 32 or p.I % 32:
        return f"mma path: group_size 32 and K, I multiples of 32 (got {p.group_size}, {p.K}, {p.I})"
    if config["BLOCK_K"] not in (128, 256):
        return f"mma path: BLOCK_K {config['BLOCK_K']} is not 128 or 256 (spans of 4 groups, a step in registers)"
    if config["num_warps"] > 4:
        return "mma path: num_warps <= 4 (every warp holds its own copy of the activations)"
    if config["BLOCK_N"] // 2 < 16 * config["num_warps"]:
        return (f"mma path: BLOCK_N {config['BLOCK_N']} < 32 x num_warps {config['num_warps']} (each warp takes at "
                "least 16 gate and 16 up rows)")
    return None


def _tiles_fit(config: Config, p: MoEProblem) -> str | None:
    if config["BLOCK_M"] > max(16, _pow2(p.M)):
        return f"BLOCK_M {config['BLOCK_M']} exceeds the rows any expert can get (M={p.M})"
    if config["BLOCK_N"] > max(32, _pow2(max(2 * p.I, p.K))):
        return f"BLOCK_N {config['BLOCK_N']} exceeds the weight rows"
    if _splits_first_gemm(config):
        if config["SPLIT_K"] > 1 and triton.cdiv(p.K, config["SPLIT_K"]) < config["BLOCK_K"]:
            return f"SPLIT_K {config['SPLIT_K']} leaves less than BLOCK_K of K={p.K} per split"
    elif config["SPLIT_K"] > 1 and triton.cdiv(p.I, config["SPLIT_K"]) < config["BLOCK_K"]:
        return f"SPLIT_K {config['SPLIT_K']} leaves less than BLOCK_K of I={p.I} per split"
    return None


def _path_fits(config: Config, p: MoEProblem) -> str | None:
    path = config["PATH"]
    if path == "mma":
        if config["BLOCK_M"] != 8 or config["DEQ"] != "group_asm" or config["SPLIT_K"] > 4:
            return "mma path: BLOCK_M 8 (tokens per MMA), DEQ group_asm and SPLIT_K <= 4 only"
        if config["num_stages"] > 1 and config["BLOCK_K"] != 128:
            return "mma path: num_stages > 1 (a shared-memory ring of weight tiles) needs BLOCK_K 128"
    elif path == "gemv":
        if config["BLOCK_M"] > 2:
            return "gemv path: BLOCK_M (tokens per pass over an expert's weights) is 1 or 2"
        if config["DEQ"] not in ("arith", "group_asm"):
            return "gemv path: DEQ is arith (portable) or group_asm (PTX decode); the others are the same or n/a"
    elif config["BLOCK_M"] < 16 or config["BLOCK_N"] < 32:
        return f"{path} path: tl.dot needs BLOCK_M >= 16 and BLOCK_N >= 32"
    elif config["num_warps"] < 2 or config["SPLIT_K"] > 4:
        return f"{path} path: num_warps >= 2 and SPLIT_K <= 4 (1 warp and 8 splits are for the gemv path)"
    if path == "prefill":
        return None
    if _slots(p) > _DECODE_MAX_SLOTS or max(16, _pow2(_slots(p))) * config["BLOCK_M"] > 16384:
        return f"{path} path: M*top_k={_slots(p)} too large for BLOCK_M {config['BLOCK_M']}"
    if config["GROUP_M"] != 1:
        return f"{path} path: GROUP_M has no effect, only 1 is kept"
    return None


def _pdl_fits(config: Config, p: MoEProblem) -> str | None:
    """PDL (a chain of the call's launches, ``_pdl``) exists on the gemv and mma paths; a config without the
    key (an older bundle, SGLang's set) has it off."""
    if config.get("PDL", 0) not in (0, 1):
        return f"PDL is 0 or 1, not {config['PDL']!r}"
    if config.get("PDL", 0) and config["PATH"] not in ("gemv", "mma"):
        return f"PDL 1: the {config['PATH']} path's launches are not chained (only gemv and mma)"
    return None


def _down_tiles_fit(config: Config, p: MoEProblem) -> str | None:
    """DOWN_TILES (row tiles per program of the mma path's second GEMM, one pipeline over them: ``_moe_mma2``)
    needs whole tiles and steps (K a multiple of BLOCK_N, I of BLOCK_K) and the register double buffer; a
    config without the key has 1."""
    tiles = config.get("DOWN_TILES", 1)
    if tiles not in (1, 2, 4, 8):
        return f"DOWN_TILES is 1, 2, 4 or 8, not {tiles!r}"
    if tiles == 1:
        return None
    if config["PATH"] != "mma":
        return f"DOWN_TILES {tiles}: only the mma path loops over row tiles"
    if config["num_stages"] > 1:
        return f"DOWN_TILES {tiles} needs num_stages 1 (the register double buffer, not the ring)"
    if p.K % config["BLOCK_N"] or p.I % config["BLOCK_K"]:
        return (f"DOWN_TILES {tiles} needs K={p.K} a multiple of BLOCK_N {config['BLOCK_N']} and I={p.I} of "
                f"BLOCK_K {config['BLOCK_K']} (whole tiles and steps)")
    if tiles * config["BLOCK_N"] > p.K:
        return f"DOWN_TILES {tiles} x BLOCK_N {config['BLOCK_N']} exceeds K={p.K}"
    return None


_SGLANG_DECODE = [(64, 64, 4), (32, 64, 4), (64, 128, 4), (128, 64, 8)]
_SGLANG_PREFILL = [(64, 64, 4, 2), (128, 64, 8, 2), (64, 128, 4, 3), (256, 64, 8, 2)]
_BASE = dict(GROUP_M=1, SPLIT_K=1, DEQ="arith", PDL=0, DOWN_TILES=1)
# SGLang SM120 hand-picked configs (KERNELS.md), mapped onto this space: their per-slot decode GEMV
# (BN weight rows, BK, warps, 2 stages) -> PATH decode with the smallest M tile (16); their grouped
# prefill GEMM (BLOCK_M 64) -> PATH prefill. Their BN is the weight rows per program, as ours.
# GROUP_M 1, no split-K, in-register dequant ("arith"), no launch chaining, as theirs.
SGLANG_SM120 = [
    dict(PATH="decode", BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, num_warps=w, num_stages=2, **_BASE)
    for bn, bk, w in _SGLANG_DECODE
] + [
    dict(PATH="prefill", BLOCK_M=64, BLOCK_N=bn, BLOCK_K=bk, num_warps=w, num_stages=s, **_BASE)
    for bn, bk, w, s in _SGLANG_PREFILL
]

_TENSOR_CORE_TILES = dict(BLOCK_M=Choice(16, 32, 64, 128), BLOCK_N=Choice(32, 64, 128, 256),
                          BLOCK_K=Choice(64, 128, 256), SPLIT_K=Choice(1, 2, 4), num_warps=Choice(2, 4, 8))
# What each PATH can use (the constraints below say the same, and why): the space enumerates one product
# per path (38,400 configs), not one product of every value.
_BRANCHES = ("PATH", {
    "gemv": dict(BLOCK_M=Choice(1, 2), GROUP_M=Choice(1), DEQ=Choice("arith", "group_asm"), DOWN_TILES=Choice(1)),
    "decode": dict(_TENSOR_CORE_TILES, GROUP_M=Choice(1), PDL=Choice(0), DOWN_TILES=Choice(1)),
    "prefill": dict(_TENSOR_CORE_TILES, PDL=Choice(0), DOWN_TILES=Choice(1)),
    "mma": dict(BLOCK_M=Choice(8), BLOCK_N=Choice(32, 64, 128, 256), BLOCK_K=Choice(128, 256), GROUP_M=Choice(1),
                SPLIT_K=Choice(1, 2, 4), DEQ=Choice("group_asm"), num_warps=Choice(1, 2, 4),
                num_stages=Choice(1, 2, 3, 4), DOWN_TILES=Choice(1, 2, 4, 8)),
})

SPACE = ConfigSpace(
    params={
        "PATH": Choice("decode", "prefill", "gemv", "mma"), "BLOCK_M": Choice(1, 2, 8, 16, 32, 64, 128),
        "BLOCK_N": Choice(8, 16, 32, 64, 128, 256), "BLOCK_K": Choice(64, 128, 256, 512, 1024), "GROUP_M": Choice(1, 8),
        "SPLIT_K": Choice(1, 2, 4, 8), "DEQ": Choice("arith", "group", "group_asm", "dot_scaled"),
        "num_warps": Choice(1, 2, 4, 8), "num_stages": Choice(1, 2, 3, 4), "PDL": Choice(0, 1),
        "DOWN_TILES": Choice(1, 2, 4, 8),
    },
    # Valid for every problem and runs under the interpreter; the best swept config of the H100 bench at
    # DeepSeek-V4-Flash TP 1, M = 32 (BENCHMARKS.md); not measured as a default elsewhere.
    default=dict(PATH="prefill", BLOCK_M=16, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, SPLIT_K=1, DEQ="arith",
                 num_warps=4, num_stages=4, PDL=0, DOWN_TILES=1),
    constraints=(_block_k_fits, _mma_fits, _tiles_fit, _path_fits, _pdl_fits, _down_tiles_fit),
    baselines={"sglang_sm120": SGLANG_SM120},
    branches=_BRANCHES,
)


# The runtime defaults, measured on the H200 against each other, SPACE.default and the tuned configs
# (BENCHMARKS.md, "default" columns and the eighth session's ``bench_moe_defaults.py`` table).
# The gemv path with its portable E2M1 decode (runs on every GPU and under the interpreter), pipelined 2
# steps ahead: faster than SPACE.default at M = 1 and 8 (all three models), not at 32.
_DECODE_DEFAULT = dict(PATH="gemv", BLOCK_M=1, BLOCK_N=16, BLOCK_K=512, GROUP_M=1, SPLIT_K=1, DEQ="arith",
                       num_warps=1, num_stages=3)
_DECODE_DEFAULT_MAX_M = 8
# On NVIDIA GPUs with mma.sync (sm_80 on), the tensor-core decode path: BN 32 on one warp (tuned at M = 8
# for all three models) up to M = 16, BN 128 on four warps (tuned at M = 32) up to M = 128; the gemv
# default stays where M * I <= 512 (DeepSeek-V4-Flash TP 8 at M = 1 and 2: 21.5 / 24.9 us against 26.4 /
# 28.0), the only measured shapes where it is faster.
_MMA_SMALL_DEFAULT = dict(PATH="mma", BLOCK_M=8, BLOCK_N=32, BLOCK_K=256, GROUP_M=1, SPLIT_K=1, DEQ="group_asm",
                          num_warps=1, num_stages=1)
_MMA_SMALL_DEFAULT_MAX_M = 16
_MMA_DEFAULT = dict(_MMA_SMALL_DEFAULT, BLOCK_N=128, num_warps=4)
# ... with the second GEMM's 4-tile loop where K and I allow it: 10-17% at V4-Flash TP 8 M = 32 and 128, within
# 1% at TP 1 (H100, BENCHMARKS.md, nineteenth session)
_MMA_DEFAULT_MAX_M = 128  # 1.9-2.0x SPACE.default (the prefill path) at M = 128
_GEMV_OVER_MMA_MAX_WORK = 512  # M * I


def runtime_default(problem: MoEProblem, device: DeviceClass) -> Config | None:
    """What ``fused_moe`` runs on ``device`` with no tuned config: on NVIDIA sm_80+ the mma path up to
    M = 128 (except the smallest decode problems), else the gemv default at M <= 8 (its launches chained
    with PDL on sm_90+: 5-11% faster at M = 1 and 8 on the H100, BENCHMARKS.md); the first of those that is
    valid for ``problem``, or None (the space default: the tensor-core prefill path)."""
    p = problem
    candidates = []
    if has_mma_v2(device) and p.M * p.I > _GEMV_OVER_MMA_MAX_WORK:
        if p.M <= _MMA_SMALL_DEFAULT_MAX_M:
            candidates.append(_MMA_SMALL_DEFAULT)
        elif p.M <= _MMA_DEFAULT_MAX_M:
            candidates += [dict(_MMA_DEFAULT, DOWN_TILES=4), _MMA_DEFAULT]  # the first where K, I allow it
    if p.M <= _DECODE_DEFAULT_MAX_M:
        candidates.append(dict(_DECODE_DEFAULT, PDL=1) if has_pdl(device) else _DECODE_DEFAULT)
    return next((dict(c) for c in candidates if SPACE.check(c, p) is None), None)


def _problem_kwargs(p: MoEProblem) -> dict[str, Any]:
    """The non-tensor arguments ``make_inputs`` uses: DeepSeek-V4-Flash's limit 10 and scaling 1.5 for
    "swiglu", gpt-oss's defaults for "swiglu_oai"."""
    swiglu = p.activation == "swiglu"
    return dict(activation=p.activation, layout=p.layout, swiglu_limit=10.0 if swiglu else None,
                routed_scaling_factor=1.5 if swiglu else 1.0, group_size=p.group_size)


def random_routing(m: int, e: int, top_k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly random distinct experts per token (int32) and positive fp32 weights summing to 1."""
    ids = torch.rand(m, e, generator=gen, device=gen.device).argsort(dim=1)[:, :top_k].to(torch.int32)
    weights = torch.rand(m, top_k, generator=gen, device=gen.device) + 0.1
    return ids.contiguous(), (weights / weights.sum(dim=1, keepdim=True)).contiguous()


def make_inputs(problem: MoEProblem, seed: int, device: str) -> Inputs:
    """Seeded random inputs: x ~ N(0, 1), uniformly random E2M1 codes, scale bytes in [116, 124]
    (weights of realistic magnitude), random routing; fp32 biases ~ N(0, 0.1) when ``has_bias``.
    Drawn on ``device`` itself (a GPU fills gigabytes of weights in milliseconds), so the values for a
    seed differ between the CPU and a GPU."""
    p, g = problem, torch.Generator(device=device).manual_seed(seed)
    u8 = dict(dtype=torch.uint8, generator=g, device=device)
    ids, weights = random_routing(p.M, p.E, p.top_k, g)
    inputs: Inputs = dict(
        x=torch.randn(p.M, p.K, generator=g, device=device).to(torch.bfloat16),
        w13=torch.randint(0, 256, (p.E, 2 * p.I, p.K // 2), **u8),
        w13_scale=torch.randint(116, 125, (p.E, 2 * p.I, p.K // p.group_size), **u8),
        w2=torch.randint(0, 256, (p.E, p.K, p.I // 2), **u8),
        w2_scale=torch.randint(116, 125, (p.E, p.K, p.I // p.group_size), **u8),
        topk_ids=ids, topk_weights=weights,
    )
    if p.has_bias:
        inputs["w13_bias"] = torch.randn(p.E, 2 * p.I, generator=g, device=device) * 0.1
        inputs["w2_bias"] = torch.randn(p.E, p.K, generator=g, device=device) * 0.1
    inputs.update(_problem_kwargs(p))
    return inputs


def expected_active_experts(p: MoEProblem) -> float:
    """Expected number of distinct experts hit by M tokens under uniformly random top-k routing."""
    return p.E * (1.0 - (1.0 - p.top_k / p.E) ** p.M)


def pdl_of(p: MoEProblem, config: Config) -> tuple[bool, bool]:
    """(the launches form one PDL chain, the second GEMM prefetches its weight rows into L2): the config's
    PDL on the gemv and mma paths; the prefetch where every active expert's weights (both GEMMs': what streams
    through L2 between a prefetch and its use; at most M * top_k experts) are at most
    ``_pdl.PREFETCH_MAX_BYTES``. From the problem and the config alone, so ``launches()`` matches the launcher."""
    if not config.get("PDL", 0) or config["PATH"] not in ("gemv", "mma"):
        return False, False
    return True, min(_slots(p), p.E) * expert_weight_bytes(p) <= _pdl.PREFETCH_MAX_BYTES


def expert_weight_bytes(p: MoEProblem) -> int:
    """Bytes of one expert's weights, scales and biases."""
    w13 = 2 * p.I * (p.K // 2 + p.K // p.group_size)
    w2 = p.K * (p.I // 2 + p.I // p.group_size)
    return w13 + w2 + (4 * (2 * p.I + p.K) if p.has_bias else 0)


def cost(problem: MoEProblem) -> Cost:
    """Bytes: the active experts' weights (expected under random routing) + x + out; FLOPs: both GEMMs."""
    p = problem
    weights = int(expected_active_experts(p) * expert_weight_bytes(p))
    return Cost(bytes=weights + 4 * p.M * p.K + 8 * p.M * p.top_k, flops=6 * p.M * p.top_k * p.I * p.K)


def launches(problem: MoEProblem, config: Config) -> list[Launch]:
    """The exact launches ``fused_moe`` does for ``problem`` and ``config``, on meta tensors."""
    return [launch for launch, _ in meta_plan(problem, config)]


def meta_plan(problem: MoEProblem, config: Config) -> list[tuple[Launch, tuple]]:
    """``launches`` with each launch's grid."""
    p, meta, g = problem, torch.device("meta"), problem.group_size
    u8 = dict(dtype=torch.uint8, device=meta)
    f32 = dict(dtype=torch.float32, device=meta)
    ts: Tensors = dict(
        x=torch.empty(p.M, p.K, dtype=torch.bfloat16, device=meta),
        w13=torch.empty(p.E, 2 * p.I, p.K // 2, **u8), w13_scale=torch.empty(p.E, 2 * p.I, p.K // g, **u8),
        w2=torch.empty(p.E, p.K, p.I // 2, **u8), w2_scale=torch.empty(p.E, p.K, p.I // g, **u8),
        topk_ids=torch.empty(p.M, p.top_k, dtype=torch.int32, device=meta),
        topk_weights=torch.empty(p.M, p.top_k, **f32),
    )
    if p.has_bias:
        ts.update(w13_bias=torch.empty(p.E, 2 * p.I, **f32), w2_bias=torch.empty(p.E, p.K, **f32))
    ts.update(_workspace(p, config, meta, ts["topk_ids"]))
    return _plan(ts, p, 7.0, 1.0, config)


def _run(inputs: Inputs, config: Config) -> Any:
    return fused_moe(**inputs, config=config)


def _reference(inputs: Inputs) -> Any:
    return fused_moe_ref(**inputs)


KERNEL = Kernel(
    name="mxfp4_moe",
    problem_type=MoEProblem,
    space=SPACE,
    make_inputs=make_inputs,
    run=_run,
    reference=_reference,
    launches=launches,
    cost=cost,
    tolerance=1e-2,
    source_modules=(__name__, "aotune.kernels._moe_kernels", "aotune.kernels._moe_gemv",
                    "aotune.kernels._moe_mma", "aotune.kernels._moe_checks", "aotune.kernels.formats.mxfp4",
                    "aotune.kernels._pdl"),
    timing="graph",
    runtime_default=runtime_default,
)
