"""GEMV path of the MXFP4 MoE (config ``PATH="gemv"``): decode batches on the FMA units, no tensor cores.

At decode each active expert gets one or two tokens. A tensor-core tile pads those to 16 rows, and in
Triton 3.6 the weights then travel global -> shared -> registers with about 7.7 SASS instructions per
weight (BENCHMARKS.md), half the H200's copy bandwidth at best. Here a program streams BLOCK_N weight
rows of one expert straight into registers (16-byte loads), decodes each byte's two E2M1 nibbles to
fp32 and multiplies them by ``BLOCK_M`` (1 or 2) tokens' activations with fp32 FMAs; each scale group's
sum is scaled by its E8M0 factor. Every product is exact in fp32, as on the tensor-core paths; only the
order of the fp32 sums differs.

Grid and routing as on the decode path (``_owner``: the first slot of each expert does the work, no
sort, CUDA-graph safe). The first GEMM computes BLOCK_N/2 gate and BLOCK_N/2 up rows in one tile. With
SPLIT_K > 1 its K splits (a short dependent chain per program: what tiny batches are bound by) write fp32
partial sums that ``_moe_act`` adds in split order (deterministic) before the activation; the second
GEMM's splits add into the per-slot fp32 buffer with atomics. Latency is hidden by occupancy (about 128-155
registers per thread) and, with ``STAGES`` (the config's num_stages) > 1, by Triton's pipeliner: it stages
loads that feed no ``tl.dot`` only in a loop that carries its own ``num_stages``, so the K loop is a
``tl.range(..., num_stages=STAGES)`` and its weights, scales and activation row go through shared memory
with cp.async, STAGES - 1 steps ahead (a prefetched uint8 tile carried in registers instead was unpacked to
one byte per register: more instructions, not fewer).

E2M1 -> fp32: ``ASM`` (GPU only, sm_89+) maps each nibble to an E4M3 byte with integer ops
(s e1 e0 m -> s 0 0 e1 e0 m 0 0, exactly the value times 2**-6), converts two bytes per
``cvt.rn.f16x2.e4m3x2`` and widens to fp32; otherwise ``_e2m1_fp16_bits`` of ``_moe_kernels``
(value times 2**-14), which the CPU interpreter runs. Activations are read as int32 pairs of bf16
(even K in the low half), which widen to fp32 with one shift or mask each.
"""
from __future__ import annotations

import triton
import triton.language as tl

from aotune.kernels._moe_kernels import (
    _activate, _chunk_rows, _e2m1_fp16_bits, _gate_up_rows, _owner, _tile_ids,
)
from aotune.kernels._pdl import gdc_launch_dependents, gdc_wait, prefetch_l2


@triton.jit
def _e2m1_f32_asm(w):
    """GPU only: 4 E2M1 bytes per 32-bit register -> (low nibbles, high nibbles) in fp32, times 2**-6."""
    return tl.inline_asm_elementwise(
        asm="""{
        .reg .b32 a, b, e0, e1, p0, p1, p2, p3;
        .reg .b16 l0, l1, l2, l3, q0, q1, q2, q3, r0, r1, r2, r3;
        and.b32 a, $8, 0x07070707; shl.b32 a, a, 2; and.b32 b, $8, 0x08080808; shl.b32 b, b, 4; or.b32 e0, a, b;
        shr.b32 a, $8, 2; and.b32 a, a, 0x1C1C1C1C; and.b32 b, $8, 0x80808080; or.b32 e1, a, b;
        mov.b32 {l0, l1}, e0;
        mov.b32 {l2, l3}, e1;
        cvt.rn.f16x2.e4m3x2 p0, l0;
        cvt.rn.f16x2.e4m3x2 p1, l1;
        cvt.rn.f16x2.e4m3x2 p2, l2;
        cvt.rn.f16x2.e4m3x2 p3, l3;
        mov.b32 {q0, q1}, p0; mov.b32 {q2, q3}, p1;
        mov.b32 {r0, r1}, p2; mov.b32 {r2, r3}, p3;
        cvt.f32.f16 $0, q0; cvt.f32.f16 $1, q1; cvt.f32.f16 $2, q2; cvt.f32.f16 $3, q3;
        cvt.f32.f16 $4, r0; cvt.f32.f16 $5, r1; cvt.f32.f16 $6, r2; cvt.f32.f16 $7, r3;
        }""",
        constraints="=r,=r,=r,=r,=r,=r,=r,=r,r",
        args=[w],
        dtype=(tl.float32, tl.float32),
        is_pure=True,
        pack=4,
    )


@triton.jit
def _e2m1_f32(w, ASM: tl.constexpr):
    """E2M1 bytes -> (low, high nibble) as exact fp32 values, times 2**-6 (ASM) or 2**-14."""
    if ASM:
        lo, hi = _e2m1_f32_asm(w)
    else:
        lo, hi = _e2m1_fp16_bits(w)
        lo = lo.to(tl.float16, bitcast=True).to(tl.float32)
        hi = hi.to(tl.float16, bitcast=True).to(tl.float32)
    return lo, hi


@triton.jit
def _row_sums(lo, hi, sf, x_ptrs, BN: tl.constexpr, BK: tl.constexpr, G: tl.constexpr, PIPE: tl.constexpr):
    """[BN]-row partial dot products with one token's BK activations, each scale group times its factor."""
    if PIPE:  # pipelined: one [BK/2] row through shared memory (a [BN, BK/2] copy would take BN times the room)
        xp = tl.load(x_ptrs)[None, :]
    else:
        # [BN, BK/2] pointers, equal along the rows: the load takes the weight tile's layout (no shared-memory
        # round trip), and the compiler folds the repeated loads and conversions of each thread.
        xp = tl.load(x_ptrs[None, :] + tl.zeros((BN, 1), tl.int32))
    x_even = (xp << 16).to(tl.float32, bitcast=True)
    x_odd = (xp & -65536).to(tl.float32, bitcast=True)
    p = tl.join(lo * x_even, hi * x_odd)  # in-thread sums then chain into FMAs (no separate FADD)
    return tl.sum(tl.reshape(p, (BN, BK // G, G)), axis=2) * sf


@triton.jit
def _gemv_step(acc0, acc1, x0_ptrs, x1_ptrs, w_ptrs, s_ptrs, BN: tl.constexpr, BK: tl.constexpr,
               G: tl.constexpr, R: tl.constexpr, ASM: tl.constexpr, PIPE: tl.constexpr):
    """One BK step, all of it inside K (unmasked 16-byte loads): acc* [BN, BK/G] += scaled group sums."""
    w = tl.load(w_ptrs)
    s = tl.load(s_ptrs).to(tl.uint32)
    sf = ((s << 23) | ((s == 255).to(tl.uint32) << 22)).to(tl.float32, bitcast=True)
    lo, hi = _e2m1_f32(w, ASM)
    acc0 += _row_sums(lo, hi, sf, x0_ptrs, BN, BK, G, PIPE)
    if R == 2:
        acc1 += _row_sums(lo, hi, sf, x1_ptrs, BN, BK, G, PIPE)
    return acc0, acc1


@triton.jit
def _gemv_loop(x0_ptrs, x1_ptrs, w_ptrs, s_ptrs, k_lo, k_hi, BN: tl.constexpr, BK: tl.constexpr,
               G: tl.constexpr, R: tl.constexpr, ASM: tl.constexpr, STAGES: tl.constexpr):
    """[BN] sums over BK steps from k_lo while a whole step fits below k_hi; pointers given at k_lo.

    STAGES > 1: Triton's pipeliner streams the step's loads (weights, scales, activations) through
    shared memory with cp.async, STAGES - 1 steps ahead (it does so for a loop without ``tl.dot`` only
    when the loop itself carries ``num_stages``)."""
    acc0 = tl.zeros((BN, BK // G), tl.float32)
    acc1 = tl.zeros((BN, BK // G), tl.float32)
    for _ in tl.range(k_lo, k_hi - BK + 1, BK, num_stages=STAGES):
        acc0, acc1 = _gemv_step(acc0, acc1, x0_ptrs, x1_ptrs, w_ptrs, s_ptrs, BN, BK, G, R, ASM, STAGES > 1)
        w_ptrs += BK // 2
        s_ptrs += BK // G
        x0_ptrs += BK // 2
        x1_ptrs += BK // 2
    return tl.sum(acc0, axis=1), tl.sum(acc1, axis=1)


@triton.jit
def _gemv(x0_ptr, x1_ptr, w_rows, s_rows, k_lo, k_hi, BN: tl.constexpr, BK: tl.constexpr, TAIL_K: tl.constexpr,
          G: tl.constexpr, R: tl.constexpr, ASM: tl.constexpr, STAGES: tl.constexpr):
    """Dot products of BN weight rows with R <= 2 tokens over K in [k_lo, k_hi), no masked load.

    ``w_rows`` / ``s_rows`` [BN] point at the rows' weight and scale bytes at K = 0, ``x*_ptr`` at the
    tokens' bf16 pairs (int32) at K = 0. Whole BK steps first, then the rest in TAIL_K steps (a power of
    two dividing K, so the tail needs no mask either). Returns two [BN] fp32 vectors (the second is zeros
    when R == 1), times 2**-6 (ASM) or 2**-14."""
    kp = tl.arange(0, BK // 2)
    w_ptrs = w_rows[:, None] + (k_lo // 2 + kp)[None, :]
    s_ptrs = s_rows[:, None] + (k_lo // G + tl.arange(0, BK // G))[None, :]
    y0, y1 = _gemv_loop(x0_ptr + k_lo // 2 + kp, x1_ptr + k_lo // 2 + kp, w_ptrs, s_ptrs, k_lo, k_hi,
                        BN, BK, G, R, ASM, STAGES)
    if TAIL_K < BK:
        k_tail = k_lo + (max(k_hi, k_lo) - k_lo) // BK * BK  # a split past the end of K: no tail
        kt = tl.arange(0, TAIL_K // 2)
        t0, t1 = _gemv_loop(x0_ptr + k_tail // 2 + kt, x1_ptr + k_tail // 2 + kt,
                            w_rows[:, None] + (k_tail // 2 + kt)[None, :],
                            s_rows[:, None] + (k_tail // G + tl.arange(0, TAIL_K // G))[None, :],
                            k_tail, k_hi, BN, TAIL_K, G, R, ASM, 1)
        y0 += t0
        y1 += t1
    return y0, y1


@triton.jit
def _pick(v, i):
    """Element ``i`` of a small 1-D tensor, as a scalar."""
    return tl.sum(tl.where(tl.arange(0, v.shape[0]) == i, v, 0), axis=0)


@triton.jit
def _slot_pair(match, rank, count, c, T_PAD: tl.constexpr, R: tl.constexpr):
    """The slots of ranks c (and c + 1 when R == 2) of this expert; the second repeats the first if absent."""
    slots, slot_ok = _chunk_rows(match, rank, count, c, T_PAD, R)
    first = _pick(slots, 0)
    return first, tl.where(_pick(slot_ok.to(tl.int32), R - 1) != 0, _pick(slots, R - 1), first)


@triton.jit
def _first_epilogue(h, slot, ok, hc, b_base, g_rows, u_rows, h_ptr, ws_ptr, stride_hm, stride_wsm, I, limit,
                    HALF: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr):
    """One token's first-GEMM result [2*HALF] (gate rows, then up rows): the bf16 activation, or with K
    split, the fp32 partial sums (gate at column c, up at I + c of the split's workspace row)."""
    g, u = tl.split(tl.permute(tl.reshape(h, (2, HALF)), (1, 0)))
    if SPLIT == 1:
        tl.store(h_ptr + slot * stride_hm + hc, _activate(g, u, b_base, g_rows, u_rows, limit, ACT, HAS_BIAS),
                 mask=ok)
    else:
        tl.store(ws_ptr + slot * stride_wsm + hc, g, mask=ok)
        tl.store(ws_ptr + slot * stride_wsm + I + hc, u, mask=ok)


@triton.jit
def _moe_gemv1(x_ptr, w_ptr, s_ptr, b_ptr, h_ptr, ws_ptr, ids_ptr, T, K, I, E, top_k, limit,
               stride_xm, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_hm, stride_wss, stride_wsm,
               ACT: tl.constexpr, LAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr, T_PAD: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, G: tl.constexpr,
               ASM: tl.constexpr, TAIL_K: tl.constexpr, SPLIT: tl.constexpr, STAGES: tl.constexpr,
               PDL: tl.constexpr = False):
    """h[slot] = act(x[slot // top_k] @ deq(w13[e]).T) for BLOCK_N/2 intermediate columns; x_ptr is int32.
    With SPLIT > 1 each program sums one K range into its split's fp32 workspace (``_moe_act`` finishes).
    PDL: the first launch of a chain (``_pdl``), it lets the next one start."""
    if PDL:
        gdc_launch_dependents()
    HALF: tl.constexpr = BLOCK_N // 2
    pid_m, pid_n, pid_k = _tile_ids(1, T, tl.cdiv(I, HALF))
    e, owns, match, rank, count = _owner(ids_ptr, pid_m, T, E, T_PAD)
    if owns:
        e64 = e.to(tl.int64)
        r = tl.arange(0, BLOCK_N)
        cols = pid_n * HALF + r % HALF
        g_w, u_w = _gate_up_rows(tl.where(cols < I, cols, 0), I, LAYOUT)  # clamped: unmasked weight loads
        wrows = tl.where(r < HALF, g_w, u_w)
        w_rows = w_ptr + e64 * stride_we + wrows * stride_wn
        s_rows = s_ptr + e64 * stride_se + wrows * stride_sn
        hc = pid_n * HALF + tl.arange(0, HALF)
        g_rows, u_rows = _gate_up_rows(tl.where(hc < I, hc, 0), I, LAYOUT)
        b_base = b_ptr + e64 * stride_be
        k_per = tl.cdiv(tl.cdiv(K, SPLIT), BLOCK_K) * BLOCK_K
        k_lo = pid_k * k_per
        k_hi = min(K, k_lo + k_per)
        ws_split = ws_ptr + pid_k * stride_wss
        unit = 64.0 if ASM else 16384.0
        for c in range(0, count, BLOCK_M):
            slot0, slot1 = _slot_pair(match, rank, count, c, T_PAD, BLOCK_M)
            h0, h1 = _gemv(x_ptr + (slot0 // top_k) * stride_xm, x_ptr + (slot1 // top_k) * stride_xm,
                           w_rows, s_rows, k_lo, k_hi, BLOCK_N, BLOCK_K, TAIL_K, G, BLOCK_M, ASM, STAGES)
            _first_epilogue(h0 * unit, slot0, hc < I, hc, b_base, g_rows, u_rows, h_ptr, ws_split, stride_hm,
                            stride_wsm, I, limit, HALF, ACT, HAS_BIAS, SPLIT)
            if BLOCK_M == 2:
                _first_epilogue(h1 * unit, slot1, (hc < I) & (slot1 != slot0), hc, b_base, g_rows, u_rows, h_ptr,
                                ws_split, stride_hm, stride_wsm, I, limit, HALF, ACT, HAS_BIAS, SPLIT)


@triton.jit
def _moe_act(ws_ptr, b_ptr, h_ptr, ids_ptr, I, E, limit, stride_wss, stride_wsm, stride_be, stride_hm,
             ACT: tl.constexpr, LAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
             BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    """After a K-split first GEMM: h[slot] = act(sum of the SPLIT fp32 partials), summed in split order.
    PDL: a middle launch of a chain (``_pdl``), it lets the next one start, then waits for the first GEMM."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    slot = tl.program_id(0)
    hc = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = hc < I
    e = tl.load(ids_ptr + slot)
    if (e >= 0) & (e < E):  # other slots are skipped by the second GEMM and the reduce as well
        g = tl.zeros((BLOCK,), tl.float32)
        u = tl.zeros((BLOCK,), tl.float32)
        for s in tl.static_range(SPLIT):
            row = ws_ptr + s * stride_wss + slot * stride_wsm
            g += tl.load(row + hc, mask=ok, other=0.0)
            u += tl.load(row + I + hc, mask=ok, other=0.0)
        g_rows, u_rows = _gate_up_rows(tl.where(ok, hc, 0), I, LAYOUT)
        a = _activate(g, u, b_ptr + e.to(tl.int64) * stride_be, g_rows, u_rows, limit, ACT, HAS_BIAS)
        tl.store(h_ptr + slot * stride_hm + hc, a, mask=ok)


@triton.jit
def _down_store(y, slot, ok, cols, b_base, tw_ptr, out_ptr, stride_om, first_split, HAS_BIAS: tl.constexpr,
                ATOMIC: tl.constexpr):
    """Second-GEMM epilogue of one slot: (+ bias on the first K split) * routing weight -> fp32 per slot."""
    if HAS_BIAS:
        y += tl.where(first_split, tl.load(b_base + tl.where(ok, cols, 0)), 0.0)
    y = y * tl.load(tw_ptr + slot)
    if ATOMIC:
        tl.atomic_add(out_ptr + slot * stride_om + cols, y, mask=ok)
    else:
        tl.store(out_ptr + slot * stride_om + cols, y, mask=ok)


@triton.jit
def _prefetch_rows(w_base, s_base, row0, row1, stride_wn, stride_sn):
    """Prefetch weight rows ``row0 .. row1 - 1`` of one expert (bytes and scale bytes) into L2."""
    prefetch_l2(w_base + row0 * stride_wn, (row1 - row0).to(tl.int64) * stride_wn)
    prefetch_l2(s_base + row0 * stride_sn, (row1 - row0).to(tl.int64) * stride_sn)


@triton.jit
def _moe_gemv2(a_ptr, w_ptr, s_ptr, b_ptr, out_ptr, tw_ptr, ids_ptr, T, N, KI, E, top_k,
               stride_am, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_om,
               HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr, T_PAD: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, G: tl.constexpr,
               ASM: tl.constexpr, TAIL_K: tl.constexpr, STAGES: tl.constexpr, PDL: tl.constexpr = False,
               PREFETCH: tl.constexpr = False):
    """out[slot] (+)= (a[slot] @ deq(w2[e]).T + b2) * topk_weight for BLOCK_N output columns; a_ptr is int32.
    PDL: a later launch of a chain (``_pdl``); with PREFETCH its weight tile goes to L2 before the wait."""
    pid_m, pid_n, pid_k = _tile_ids(1, T, tl.cdiv(N, BLOCK_N))
    e, owns, match, rank, count = _owner(ids_ptr, pid_m, T, E, T_PAD)
    if PDL:
        gdc_launch_dependents()
        if PREFETCH:
            if owns & (pid_k == 0):
                e_pf = e.to(tl.int64)
                _prefetch_rows(w_ptr + e_pf * stride_we, s_ptr + e_pf * stride_se, pid_n * BLOCK_N,
                               min(N, pid_n * BLOCK_N + BLOCK_N), stride_wn, stride_sn)
        gdc_wait()
    if owns:
        e64 = e.to(tl.int64)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = cols < N
        safe = tl.where(ok, cols, 0)
        k_per = tl.cdiv(tl.cdiv(KI, SPLIT_K), BLOCK_K) * BLOCK_K
        k_lo = pid_k * k_per
        k_hi = min(KI, k_lo + k_per)
        w_rows = w_ptr + e64 * stride_we + safe * stride_wn
        s_rows = s_ptr + e64 * stride_se + safe * stride_sn
        b_base = b_ptr + e64 * stride_be
        unit = 64.0 if ASM else 16384.0
        for c in range(0, count, BLOCK_M):
            slot0, slot1 = _slot_pair(match, rank, count, c, T_PAD, BLOCK_M)
            y0, y1 = _gemv(a_ptr + slot0 * stride_am, a_ptr + slot1 * stride_am, w_rows, s_rows, k_lo, k_hi,
                           BLOCK_N, BLOCK_K, TAIL_K, G, BLOCK_M, ASM, STAGES)
            _down_store(y0 * unit, slot0, ok, cols, b_base, tw_ptr, out_ptr, stride_om, pid_k == 0, HAS_BIAS,
                        ATOMIC)
            if BLOCK_M == 2:
                _down_store(y1 * unit, slot1, ok & (slot1 != slot0), cols, b_base, tw_ptr, out_ptr, stride_om,
                            pid_k == 0, HAS_BIAS, ATOMIC)
