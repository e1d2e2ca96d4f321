"""Problem key, config space, input factory and cost model of ``aotune.kernels.flash_mla``.

Input factory (``make_inputs``): each request owns ``context = 4 * topk`` tokens (rounded up to a
page) of the main cache, on pages shuffled through a random block table; its top-k indices are
distinct random tokens of its context, about 3% of them -1. The extra cache (the sliding window)
gives each request ``extra_topk`` consecutive tokens. K/V values are N(0, 1), q is N(0, 1) bf16,
``sm_scale`` is the model's (v32: 192^-0.5 * (0.1 ln 40 + 1)^2, v4: 512^-0.5). With
``has_topk_length`` the lengths are drawn in [topk/2, topk] (never 0: tests build lonely rows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from aotune.cache_db.identity import DeviceClass
from aotune.kernels.base import Cost, Inputs, Problem
from aotune.kernels.device import has_fp8_cvt, has_pdl
from aotune.kernels.formats.mla_kv import pack_kv_v4, pack_kv_v32, v4_page_bytes
from aotune.kernels.space import Choice, Config, ConfigSpace

D_QK = {"v32": 576, "v4": 512}
TOKEN_BYTES = {"v32": 656, "v4": 584}
SM_SCALE = {"v32": 192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2, "v4": 512 ** -0.5}


@dataclass(frozen=True)
class SparseDecodeProblem(Problem):
    """B requests x S_q query rows, H heads on this rank, topk main positions (+ extra_topk extra ones)."""

    B: int
    S_q: int
    H: int
    topk: int
    layout: str
    page_size: int
    extra_topk: int = 0
    has_sink: bool = False
    has_topk_length: bool = False


def path_of(config: Config) -> str:
    """The config's code path: "triton" (``_mla_kernels``, also under the interpreter) or "mma" (``_mla_mma``,
    Gluon, NVIDIA sm_89+). Configs from before the choice existed are "triton"."""
    return config.get("PATH", "triton")


def combine_of(config: Config) -> str:
    """How the split partials are merged: "launch" (the combine kernel; also configs from before the choice)
    or "fused" (the last split program of each row and head tile, mma path only)."""
    return config.get("COMBINE", "launch")


def combine_fits(config: Config, problem: SparseDecodeProblem) -> str | None:
    """COMBINE "fused" is the mma path's (Gluon atomics), needs splits to merge and has no second launch to chain
    with PDL."""
    combine = combine_of(config)
    if combine not in ("launch", "fused"):
        return f"COMBINE is 'launch' or 'fused', not {combine!r}"
    if combine == "fused" and (path_of(config) != "mma" or config["NUM_SPLITS"] == 1 or config.get("PDL", 0)):
        return "COMBINE 'fused' needs PATH 'mma', NUM_SPLITS > 1 and PDL 0 (one launch: nothing to chain)"
    return None


def _tiles(config: Config, problem: SparseDecodeProblem) -> int:
    block = config["BLOCK_T"]
    return -(-problem.topk // block) + -(-problem.extra_topk // block)


def launch_splits(config: Config, problem: SparseDecodeProblem) -> int:
    """The split count the launches use: ``NUM_SPLITS`` less the splits that would get no tile. Each split
    takes ``ceil(tiles / NUM_SPLITS)`` tiles, so e.g. 32 splits of V4-Flash's 40 tiles of 16 run as 20 splits
    of 2 (the same work per program, 12 fewer programs and partials for the combine to read)."""
    tiles = max(1, _tiles(config, problem))
    return -(-tiles // -(-tiles // max(1, config["NUM_SPLITS"])))


def _pdl_fits(config: Config, problem: SparseDecodeProblem) -> str | None:
    """PDL chains the combine to the split pass (``_pdl``): a config with it needs more than one split (a
    config without the key has it off)."""
    pdl = config.get("PDL", 0)
    if pdl not in (0, 1):
        return f"PDL is 0 or 1, not {pdl!r}"
    if pdl and config["NUM_SPLITS"] == 1:
        return "PDL 1 needs NUM_SPLITS > 1 (it chains the combine to the split pass; one split has no combine)"
    return None


def _valid_problem(config: Config, problem: SparseDecodeProblem) -> str | None:
    if problem.layout not in D_QK:
        return f"layout {problem.layout!r} is not 'v32' or 'v4'"
    return None


def _head_tile_fits(config: Config, problem: SparseDecodeProblem) -> str | None:
    padded = max(16, 1 << max(0, (problem.H - 1).bit_length()))
    if config["H_TILE"] > padded:
        return f"H_TILE {config['H_TILE']} exceeds H={problem.H} padded to {padded}"
    return None


def _splits_have_work(config: Config, problem: SparseDecodeProblem) -> str | None:
    tiles = _tiles(config, problem)
    if config["NUM_SPLITS"] > 1 and config["NUM_SPLITS"] > tiles:
        return f"NUM_SPLITS {config['NUM_SPLITS']} > {tiles} tiles of BLOCK_T {config['BLOCK_T']}"
    return None


def known_miscompile(config: Config, problem: SparseDecodeProblem) -> str | None:
    """v4 at BLOCK_T 16 through Triton's pipeliner (the Triton path's num_stages 3) gives wrong outputs on the H200
    (Triton 3.6; lse right, out off by > 100%, with or without extras, sink, lengths or splits: BENCHMARKS.md);
    the cause is not known. The mma path's num_stages 3 is its own ring, not the pipeliner."""
    if path_of(config) == "triton" and problem.layout == "v4" and config["BLOCK_T"] == 16 and config["num_stages"] >= 3:
        return "BLOCK_T 16 with num_stages 3 miscompiles for layout v4 (Triton 3.6 pipeliner, wrong output on sm_90)"
    return None


def mma_fits(config: Config, problem: SparseDecodeProblem) -> str | None:
    """The mma path runs 16 head rows (``_mla_mma``) or 8 heads as the MMA's N (``_mla_mma8``) on 4 warps, one
    tile of gathers in flight in registers (num_stages 1) or, with 8 heads, two through a ring of three
    shared-memory slots (num_stages 3, ``_mla_mma8._ring_loop``)."""
    if path_of(config) != "mma":
        return None
    if config["H_TILE"] not in (8, 16) or config["num_warps"] != 4:
        return "mma path: H_TILE 8 or 16 and num_warps 4 only"
    if config["num_stages"] != 1 and not (config["num_stages"] == 3 and config["H_TILE"] == 8):
        return "mma path: num_stages 1, or 3 (the shared-memory ring) with H_TILE 8"
    if config["BLOCK_T"] > 32:
        return "mma path: BLOCK_T <= 32 (BLOCK_T 64 spills registers)"
    return None


def _sglang(block_t: int, h_tile: int, warps: int) -> Config:
    return {"PATH": "triton", "BLOCK_T": block_t, "H_TILE": h_tile, "NUM_SPLITS": 1, "num_warps": warps,
            "num_stages": 2, "PDL": 0, "COMBINE": "launch"}


# num_stages 1-2: the kernel's register pipeline (one tile of gathers in flight); 3: the same loop through
# Triton's pipeliner and shared memory (cp.async); 4 compiles to the same buffers as 3, so it is left out.
# PATH "triton": ``_mla_kernels`` (every GPU and the interpreter); "mma": ``_mla_mma`` (Gluon, NVIDIA sm_89+).
# NUM_SPLITS is an upper bound (``launch_splits``). 3 x 2^k split counts were measured and never won (BENCHMARKS.md,
# FlashMLA, fourteenth session).
SPACE = ConfigSpace(
    params={
        "PATH": Choice("triton", "mma"), "BLOCK_T": Choice(16, 32, 64), "H_TILE": Choice(4, 8, 16, 32, 64),
        "NUM_SPLITS": Choice(1, 2, 4, 8, 16, 32, 64), "num_warps": Choice(4, 8), "num_stages": Choice(1, 2, 3),
        "PDL": Choice(0, 1), "COMBINE": Choice("launch", "fused"),
    },
    default={"PATH": "triton", "BLOCK_T": 32, "H_TILE": 16, "NUM_SPLITS": 4, "num_warps": 4, "num_stages": 1,
             "PDL": 0, "COMBINE": "launch"},
    constraints=(_valid_problem, _head_tile_fits, _splits_have_work, known_miscompile, mma_fits, _pdl_fits,
                 combine_fits),
    branches=("PATH", {"triton": dict(COMBINE=Choice("launch")),
                       "mma": dict(BLOCK_T=Choice(16, 32), H_TILE=Choice(8, 16), num_warps=Choice(4),
                                   num_stages=Choice(1, 3))}),
    # SGLang's SM120 Triton sparse decode (KERNELS.md): (BLOCK_T, H_TILE, warps), no split-KV. H_TILE 4
    # and 8 run here as 16-row MMA tiles with the extra rows masked. KERNELS.md names no stage count: 2.
    baselines={"sglang_sm120": [_sglang(16, 4, 4), _sglang(32, 4, 8), _sglang(16, 8, 8), _sglang(32, 8, 8)]},
)


# Untuned default on NVIDIA sm_89+ (BENCHMARKS.md, FlashMLA, eleventh session): the mma path at BLOCK_T 16
# with enough splits for about two programs per SM (its residency: 2 of 4 warps, register-limited). Measured
# on the H200 (`tests/bench/bench_mla_defaults.py`, every split count at B = 1-64 and the sweep at 256) it is
# the fastest split or within 15% of it for V3.2 and V4-Flash TP 8, and 2.8-8.2x faster than the Triton space
# default at B = 1-8 (the combine merges up to 64 splits in one round trip). With at most 8 heads (V4-Flash
# TP 8) the heads-as-N kernel at BLOCK_T 32 (twentieth session, H100, `tests/bench/mla_h8_ab.py`): 1.06-1.23x
# the 16-row kernel at B = 8-256, 0.2 us slower at B = 1.
_MMA_DEFAULT = {"PATH": "mma", "BLOCK_T": 16, "H_TILE": 16, "num_warps": 4, "num_stages": 1}
_MMA_DEFAULT_FEW_HEADS = {"PATH": "mma", "BLOCK_T": 32, "H_TILE": 8, "num_warps": 4, "num_stages": 1}
_MMA_PROGRAMS_PER_SM = 2
_MMA_DEFAULT_MAX_SPLITS = 64  # the space's largest


def runtime_default(problem: SparseDecodeProblem, device: DeviceClass) -> Config | None:
    """What ``sparse_decode`` runs on ``device`` with no tuned config: on NVIDIA sm_89+ (the mma path's fp8
    conversions) the mma path (16 head rows at BLOCK_T 16; with at most 8 heads, the heads as the MMA's N at
    BLOCK_T 32) with the power-of-two split count nearest to two programs per SM (at most 64 and at most the
    tiles there are; the launches drop the splits that get no tile, ``launch_splits``), its combine chained
    with PDL on sm_90+; elsewhere None (the space default)."""
    if not has_fp8_cvt(device):
        return None
    base = _MMA_DEFAULT_FEW_HEADS if problem.H <= 8 else _MMA_DEFAULT
    programs = problem.B * problem.S_q * -(-problem.H // base["H_TILE"])
    want = _MMA_PROGRAMS_PER_SM * max(1, device.sm_count) / programs
    tiles = _tiles(base, problem)
    splits = min(1 << max(0, round(math.log2(want))), _MMA_DEFAULT_MAX_SPLITS, 1 << (tiles.bit_length() - 1))
    config = dict(base, NUM_SPLITS=splits)
    if splits > 1 and has_pdl(device):  # 1-10% faster at B = 1 and 8 on the H100, the same at 64 (BENCHMARKS.md)
        config["PDL"] = 1
    return config if SPACE.check(config, problem) is None else None


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _geometry(problem: SparseDecodeProblem) -> tuple[int, int]:
    """Tokens per request in the main cache and in the extra cache (0: no extra cache)."""
    ctx = _round_up(4 * problem.topk, problem.page_size)
    xctx = _round_up(problem.extra_topk, problem.page_size) + problem.page_size if problem.extra_topk else 0
    return ctx, xctx


def _cache_shape(problem: SparseDecodeProblem, tokens: int) -> tuple[int, ...]:
    pages = tokens // problem.page_size
    if problem.layout == "v32":
        return (pages, problem.page_size, 656)
    return (pages, v4_page_bytes(problem.page_size))


def input_shapes(problem: SparseDecodeProblem) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shapes and dtypes of the tensors ``make_inputs`` builds (for meta-tensor launches)."""
    B, S_q = problem.B, problem.S_q
    ctx, xctx = _geometry(problem)
    shapes = {"q": ((B, S_q, problem.H, D_QK[problem.layout]), torch.bfloat16),
              "kv_cache": (_cache_shape(problem, B * ctx), torch.uint8),
              "indices": ((B, S_q, problem.topk), torch.int32)}
    if problem.has_topk_length:
        shapes["topk_length"] = ((B,), torch.int32)
    if problem.extra_topk:
        shapes["extra_kv_cache"] = (_cache_shape(problem, B * xctx), torch.uint8)
        shapes["extra_indices"] = ((B, S_q, problem.extra_topk), torch.int32)
        if problem.has_topk_length:
            shapes["extra_topk_length"] = ((B,), torch.int32)
    if problem.has_sink:
        shapes["attn_sink"] = ((problem.H,), torch.float32)
    return shapes


def _cache(problem: SparseDecodeProblem, tokens: int, gen: torch.Generator, device: str) -> torch.Tensor:
    kv = torch.randn(tokens, D_QK[problem.layout], generator=gen, device=device)
    pack = pack_kv_v32 if problem.layout == "v32" else pack_kv_v4
    return pack(kv, problem.page_size)


def _token_ids(block_table: torch.Tensor, pos: torch.Tensor, page: int) -> torch.Tensor:
    """Token ids of per-request positions ``pos [B, S_q, T]`` through ``block_table [B, pages]``."""
    pages = torch.gather(block_table, 1, (pos // page).flatten(1)).view_as(pos)
    return (pages * page + pos % page).to(torch.int32)


def make_inputs(problem: SparseDecodeProblem, seed: int, device: str) -> Inputs:
    """Seeded random inputs of ``sparse_decode`` for ``problem`` (see the module docstring)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    B, S_q, page = problem.B, problem.S_q, problem.page_size
    ctx, xctx = _geometry(problem)
    table = torch.randperm(B * ctx // page, generator=gen, device=device).view(B, -1)
    pos = torch.rand(B, S_q, ctx, generator=gen, device=device).argsort(-1)[..., : problem.topk]
    idx = _token_ids(table, pos, page)
    idx = torch.where(torch.rand(idx.shape, generator=gen, device=device) < 0.03, -1, idx).contiguous()
    q = torch.randn(B, S_q, problem.H, D_QK[problem.layout], generator=gen, device=device).to(torch.bfloat16)
    out: dict[str, Any] = {"q": q, "kv_cache": _cache(problem, B * ctx, gen, device), "indices": idx,
                           "layout": problem.layout, "page_size": page, "sm_scale": SM_SCALE[problem.layout]}
    if problem.has_topk_length:
        low = max(1, problem.topk // 2)
        out["topk_length"] = torch.randint(low, problem.topk + 1, (B,), generator=gen, device=device,
                                           dtype=torch.int32)
    if problem.extra_topk:
        xtable = torch.randperm(B * xctx // page, generator=gen, device=device).view(B, -1)
        start = torch.randint(0, xctx - problem.extra_topk + 1, (B, S_q, 1), generator=gen, device=device)
        xpos = start + torch.arange(problem.extra_topk, device=device)
        out["extra_kv_cache"] = _cache(problem, B * xctx, gen, device)
        out["extra_indices"] = _token_ids(xtable, xpos, page).contiguous()
        if problem.has_topk_length:
            low = max(1, problem.extra_topk // 2)
            out["extra_topk_length"] = torch.randint(low, problem.extra_topk + 1, (B,), generator=gen,
                                                     device=device, dtype=torch.int32)
    if problem.has_sink:
        out["attn_sink"] = torch.randn(problem.H, generator=gen, device=device)
    return out


def cost(problem: SparseDecodeProblem) -> Cost:
    """Bytes: gathered KV tokens + indices + q + out (lse ignored). FLOPs: QK^T and PV over every position."""
    rows, positions = problem.B * problem.S_q, problem.topk + problem.extra_topk
    d_qk = D_QK[problem.layout]
    kv = rows * positions * (TOKEN_BYTES[problem.layout] + 4)
    qo = rows * problem.H * (d_qk + 512) * 2
    return Cost(bytes=kv + qo, flops=2 * rows * problem.H * positions * (d_qk + 512))
