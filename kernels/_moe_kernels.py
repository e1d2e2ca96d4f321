"""Triton kernels of the MXFP4 MoE (``aotune.kernels.mxfp4_moe`` launches them).

Four kernels, all CUDA-graph safe (no data-dependent grid or shape):
- ``_moe_align`` (prefill path only): one program counts the (token, slot) pairs per expert, lays the
  experts' segments out back to back, each padded to ``BLOCK_M`` (moe_align), and writes the expert of
  every ``BLOCK_M`` block (-1 for unused blocks of the fixed-capacity buffer).
- ``_moe_gemm1``: ``h = x @ deq(w13[e]).T`` for the gate and up rows of ``BLOCK_N // 2`` intermediate
  columns, bf16 rounding of ``h``, bias, activation, bf16 intermediate ``[T, I]`` indexed by flat slot.
- ``_moe_gemm2``: ``(a @ deq(w2[e]).T + b2) * topk_weight`` in fp32, stored per slot ``[T, K]`` or
  atomically added per token ``[M, K]`` (prefill path, or split-K).
- ``_moe_reduce``: fp32 sum over the top-k slots, times the routed scaling factor, to bf16.

Each GEMM program owns one expert and one N tile and reuses that expert's weight tile for all of the
expert's routed rows, ``BLOCK_M`` rows at a time. Decode path (``DECODE``): the grid is (slot, N tile);
the program of slot p works only if p is the first slot routed to its expert, and gathers that
expert's rows itself (no sort, no extra launch). Prefill path: the grid is (block of the sorted
buffer, N tile).

E2M1 decode ("arith"): a nibble's bits placed in an fp16 (exponent at bit 10, mantissa at bit 9) read
as ``value * 2**-14`` exactly, subnormals included; times the E8M0 scale in fp32 and rounded to bf16
(exact for scale bytes >= 12); the 2**14 is restored on the fp32 accumulator. ``tl.dot`` then runs on
bf16 with K split into even and odd elements (the two nibbles). "group": the same decode without the
scale, one ``tl.dot`` per scale group, the scale applied to the fp32 partial product. "dot_scaled"
hands the packed weights and scales to ``tl.dot_scaled`` (GPU only; group size 32). Constexpr DEQ:
0 arith, 1 group, 2 dot_scaled, 3 "group_asm" (the group path with a PTX E2M1 decode: GPU only).
"""
from __future__ import annotations

import triton
import triton.language as tl

from aotune.kernels._pdl import gdc_wait


@triton.jit
def _moe_align(ids_ptr, sorted_ptr, bexp_ptr, cursor_ptr, T, E, NB_CAP,
               BLOCK_M: tl.constexpr, E_PAD: tl.constexpr, CHUNK: tl.constexpr):
    bins = tl.arange(0, E_PAD)
    counts = tl.zeros((E_PAD,), tl.int32)
    for t0 in range(0, T, CHUNK):
        offs = t0 + tl.arange(0, CHUNK)
        e = tl.load(ids_ptr + offs, mask=offs < T, other=-1)
        ok = (offs < T) & (e >= 0) & (e < E)
        counts += tl.histogram(tl.where(ok, e, 0), E_PAD, mask=ok)
    nblk = (counts + BLOCK_M - 1) // BLOCK_M
    bstart = tl.cumsum(nblk, axis=0) - nblk
    tl.store(cursor_ptr + bins, bstart * BLOCK_M)
    for b0 in range(0, NB_CAP, CHUNK):
        b = b0 + tl.arange(0, CHUNK)
        tl.store(bexp_ptr + b, tl.full((CHUNK,), -1, tl.int32), mask=b < NB_CAP)
    for i0 in range(0, NB_CAP * BLOCK_M, CHUNK):
        i = i0 + tl.arange(0, CHUNK)
        tl.store(sorted_ptr + i, tl.full((CHUNK,), -1, tl.int32), mask=i < NB_CAP * BLOCK_M)
    tl.debug_barrier()
    for j in range(0, tl.max(nblk, axis=0)):
        tl.store(bexp_ptr + bstart + j, bins, mask=j < nblk)
    for t0 in range(0, T, CHUNK):
        offs = t0 + tl.arange(0, CHUNK)
        e = tl.load(ids_ptr + offs, mask=offs < T, other=-1)
        ok = (offs < T) & (e >= 0) & (e < E)
        pos = tl.atomic_add(cursor_ptr + tl.where(ok, e, 0), 1, mask=ok)
        tl.store(sorted_ptr + pos, offs, mask=ok)


@triton.jit
def _tile_ids(GROUP_M: tl.constexpr, num_m, num_n):
    """(pid_m, pid_n, pid_k) of this program, GROUP_M-swizzled over (m, n); split-K is the slowest axis."""
    pid = tl.program_id(0)
    per_k = num_m * num_n
    pid_k = pid // per_k
    pid = pid % per_k
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    rows_in_group = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % rows_in_group
    pid_n = (pid % group) // rows_in_group
    return pid_m, pid_n, pid_k


@triton.jit
def _owner(ids_ptr, pid_m, T, E, T_PAD: tl.constexpr):
    """Decode path: expert of slot ``pid_m``, whether this slot is its first one, the match mask and ranks."""
    e = tl.load(ids_ptr + pid_m)
    q = tl.arange(0, T_PAD)
    all_ids = tl.load(ids_ptr + q, mask=q < T, other=-1)
    match = all_ids == e
    first = tl.min(tl.where(match, q, T_PAD), axis=0)
    owns = (e >= 0) & (e < E) & (first == pid_m)
    hits = match.to(tl.int32)
    return e, owns, match, tl.cumsum(hits, axis=0) - 1, tl.sum(hits, axis=0)


@triton.jit
def _chunk_rows(match, rank, count, c, T_PAD: tl.constexpr, BLOCK_M: tl.constexpr):
    """Decode path: the slots of ranks c .. c + BLOCK_M - 1 among the matching ones, and which exist."""
    r = c + tl.arange(0, BLOCK_M)
    sel = match[None, :] & (rank[None, :] == r[:, None])
    rows = tl.sum(tl.where(sel, tl.arange(0, T_PAD)[None, :], 0), axis=1)
    return rows, r < count


@triton.jit
def _bf16_rne(v):
    """fp32 -> bf16, round to nearest even, in integer ops (Triton 3.6's interpreter truncates casts)."""
    bits = v.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _e2m1_fp16_bits(w):
    """E2M1 bytes -> (low nibbles, high nibbles) as the uint16 bits of fp16 values times 2**-14 (exponent
    at bit 10, mantissa at bit 9, sign at bit 15; subnormals included): exact, and the interpreter runs it."""
    w16 = w.to(tl.uint16)
    return ((w16 & 7) << 9) | ((w16 & 8) << 12), ((w16 & 0x70) << 5) | ((w16 & 0x80) << 8)


@triton.jit
def _gate_up_rows(cols, I, LAYOUT: tl.constexpr):
    """Weight rows (and bias indices) of the gate and up parts of intermediate columns ``cols``."""
    if LAYOUT == 0:  # gate_up
        g_rows, u_rows = cols, cols + I
    elif LAYOUT == 1:  # up_gate
        g_rows, u_rows = cols + I, cols
    else:  # interleaved
        g_rows, u_rows = 2 * cols, 2 * cols + 1
    return g_rows, u_rows


@triton.jit
def _activate(g, u, b_base, g_rows, u_rows, limit, ACT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """fp32 gate and up sums (columns along the last axis) -> bf16 h, bias, limit, activation -> bf16."""
    g = _bf16_rne(g).to(tl.float32)
    u = _bf16_rne(u).to(tl.float32)
    if HAS_BIAS:
        g += tl.load(b_base + g_rows)
        u += tl.load(b_base + u_rows)
    g = tl.minimum(g, limit)  # limit is +inf when there is none
    u = tl.minimum(tl.maximum(u, -limit), limit)
    if ACT == 0:  # swiglu
        a = g * tl.sigmoid(g) * u
    else:  # swiglu_oai
        a = g * tl.sigmoid(1.702 * g) * (u + 1.0)
    return _bf16_rne(a)


@triton.jit
def _scaled_half(bits, sf, BN: tl.constexpr, BK: tl.constexpr, G: tl.constexpr):
    v = bits.to(tl.float16, bitcast=True).to(tl.float32)
    v = tl.reshape(v, (BN, BK // G, G // 2)) * sf[:, :, None]
    return tl.reshape(v, (BN, BK // 2)).to(tl.bfloat16)  # exact: no rounding


@triton.jit
def _load_k(ptrs, idx, limit, other, EVEN_K: tl.constexpr):
    """Load a [rows, k] tile; unmasked when K is a multiple of the block, else mask k >= limit."""
    if EVEN_K:
        out = tl.load(ptrs)
    else:
        out = tl.load(ptrs, mask=idx[None, :] < limit, other=other)
    return out


@triton.jit
def _mx_dot(acc, x, w_ptrs, s_ptrs, k_left, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
            G: tl.constexpr, DOT_SCALED: tl.constexpr, EVEN_K: tl.constexpr):
    """acc += x [BM, BK] @ deq(w tile).T (times 2**-14 on the "arith" path); k_left = K - k0."""
    w = _load_k(w_ptrs, tl.arange(0, BK // 2), k_left // 2, 0, EVEN_K)
    s = _load_k(s_ptrs, tl.arange(0, BK // G), k_left // G, 127, EVEN_K)
    if DOT_SCALED:
        acc = tl.dot_scaled(x, None, "bf16", tl.trans(w), s, "e2m1", acc)
    else:
        lo, hi = _e2m1_fp16_bits(w)
        s32 = s.to(tl.uint32)
        sf = ((s32 << 23) | ((s32 == 255).to(tl.uint32) << 22)).to(tl.float32, bitcast=True)
        x_even, x_odd = tl.split(tl.reshape(x, (BM, BK // 2, 2)))
        acc = tl.dot(x_even, tl.trans(_scaled_half(lo, sf, BN, BK, G)), acc)
        acc = tl.dot(x_odd, tl.trans(_scaled_half(hi, sf, BN, BK, G)), acc)
    return acc


@triton.jit
def _e2m1_asm(w):
    """GPU only: E2M1 bytes -> (low nibbles, high nibbles) as exact bf16, 2 values per 32-bit op.

    prmt spreads bytes 0,1 (and 2,3) to the two 16-bit halves of a register; masks and shifts put each
    nibble's exponent/mantissa at bf16 bits 8..6 and its sign at bit 15 (value * 2**-126, subnormal for
    0.5), and one bf16x2 fma by 2**126 makes the values exact (Marlin's trick)."""
    return tl.inline_asm_elementwise(
        asm="""{
        .reg .b32 z, k, t, u, a, b;
        mov.b32 z, 0;
        mov.b32 k, 0x7E807E80;
        prmt.b32 t, $4, z, 0x4140;
        prmt.b32 u, $4, z, 0x4342;
        and.b32 a, t, 0x00070007; shl.b32 a, a, 6; and.b32 b, t, 0x00080008; shl.b32 b, b, 12; or.b32 a, a, b;
        fma.rn.bf16x2 $0, a, k, z;
        and.b32 a, u, 0x00070007; shl.b32 a, a, 6; and.b32 b, u, 0x00080008; shl.b32 b, b, 12; or.b32 a, a, b;
        fma.rn.bf16x2 $1, a, k, z;
        and.b32 a, t, 0x00700070; shl.b32 a, a, 2; and.b32 b, t, 0x00800080; shl.b32 b, b, 8; or.b32 a, a, b;
        fma.rn.bf16x2 $2, a, k, z;
        and.b32 a, u, 0x00700070; shl.b32 a, a, 2; and.b32 b, u, 0x00800080; shl.b32 b, b, 8; or.b32 a, a, b;
        fma.rn.bf16x2 $3, a, k, z;
        }""",
        constraints="=r,=r,=r,=r,r",
        args=[w],
        dtype=(tl.bfloat16, tl.bfloat16),
        is_pure=True,
        pack=4,
    )


@triton.jit
def _group_dot(acc, x_even, x_odd, w_ptrs, s_ptrs, k_ok, ASM: tl.constexpr, EVEN_K: tl.constexpr):
    """"group" dequant: acc += (x_g @ e2m1(w_g).T) * scale (times 2**-14), one scale group g.

    The weights enter the dot unscaled (E2M1 values are exact in bf16); the group's scale multiplies the
    fp32 partial product, so the per-element work is the nibble decode only."""
    if EVEN_K:
        w = tl.load(w_ptrs)
        s = tl.load(s_ptrs).to(tl.uint32)
    else:
        w = tl.load(w_ptrs, mask=k_ok, other=0)
        s = tl.load(s_ptrs, mask=k_ok, other=127).to(tl.uint32)
    if ASM:
        lo, hi = _e2m1_asm(w)  # exact values
    else:  # value * 2**-14 via fp16 bits
        lo, hi = _e2m1_fp16_bits(w)
        lo = lo.to(tl.float16, bitcast=True).to(tl.float32).to(tl.bfloat16)
        hi = hi.to(tl.float16, bitcast=True).to(tl.float32).to(tl.bfloat16)
    part = tl.dot(x_even, tl.trans(lo))
    part = tl.dot(x_odd, tl.trans(hi), part)
    sf = ((s << 23) | ((s == 255).to(tl.uint32) << 22)).to(tl.float32, bitcast=True)
    if ASM:
        sf = sf * 0.00006103515625  # the caller multiplies by 2**14 (for the fp16-bits decode)
    return acc + part * sf[None, :]


@triton.jit
def _project(acc, x_rows, w_base, s_base, wrows, k0, K, stride_wn, stride_sn, BM: tl.constexpr, BN: tl.constexpr,
             BK: tl.constexpr, G: tl.constexpr, DEQ: tl.constexpr, EVEN_K: tl.constexpr):
    """One BLOCK_K step of x[rows] @ deq(w[wrows]).T for any DEQ; x_rows are the rows' base pointers."""
    if DEQ == 1 or DEQ == 3:
        for gi in tl.static_range(BK // G):
            kk = k0 + gi * G
            k_ok = kk < K
            x_ptrs = x_rows[:, None] + (kk + tl.arange(0, G))[None, :]
            if EVEN_K:
                x = tl.load(x_ptrs)
            else:
                x = tl.load(x_ptrs, mask=k_ok, other=0.0)
            x_even, x_odd = tl.split(tl.reshape(x, (BM, G // 2, 2)))
            w_ptrs = w_base + wrows[:, None] * stride_wn + (kk // 2 + tl.arange(0, G // 2))[None, :]
            s_ptrs = s_base + wrows * stride_sn + kk // G
            acc = _group_dot(acc, x_even, x_odd, w_ptrs, s_ptrs, k_ok, DEQ == 3, EVEN_K)
    else:
        ks = tl.arange(0, BK)
        x = _load_k(x_rows[:, None] + (k0 + ks)[None, :], ks, K - k0, 0.0, EVEN_K)
        w_ptrs = w_base + wrows[:, None] * stride_wn + (k0 // 2 + tl.arange(0, BK // 2))[None, :]
        s_ptrs = s_base + wrows[:, None] * stride_sn + (k0 // G + tl.arange(0, BK // G))[None, :]
        acc = _mx_dot(acc, x, w_ptrs, s_ptrs, K - k0, BM, BN, BK, G, DEQ == 2, EVEN_K)
    return acc


@triton.jit
def _gemm1_tile(x_ptr, w_base, s_base, b_base, h_ptr, rows, row_ok, pid_n, K, I, top_k, limit,
                stride_xm, stride_wn, stride_sn, stride_hm,
                ACT: tl.constexpr, LAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, G: tl.constexpr,
                DEQ: tl.constexpr, EVEN_K: tl.constexpr):
    HALF: tl.constexpr = BLOCK_N // 2
    cols = pid_n * HALF + tl.arange(0, HALF)
    n_ok = cols < I
    safe_cols = tl.where(n_ok, cols, 0)  # clamped rows: unmasked weight loads, masked store
    g_rows, u_rows = _gate_up_rows(safe_cols, I, LAYOUT)
    x_rows = x_ptr + (tl.where(row_ok, rows, 0) // top_k) * stride_xm
    acc_g = tl.zeros((BLOCK_M, HALF), tl.float32)
    acc_u = tl.zeros((BLOCK_M, HALF), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        acc_g = _project(acc_g, x_rows, w_base, s_base, g_rows, k0, K, stride_wn, stride_sn,
                         BLOCK_M, HALF, BLOCK_K, G, DEQ, EVEN_K)
        acc_u = _project(acc_u, x_rows, w_base, s_base, u_rows, k0, K, stride_wn, stride_sn,
                         BLOCK_M, HALF, BLOCK_K, G, DEQ, EVEN_K)
    if DEQ != 2:
        acc_g = acc_g * 16384.0
        acc_u = acc_u * 16384.0
    tl.store(h_ptr + rows[:, None] * stride_hm + cols[None, :],
             _activate(acc_g, acc_u, b_base, g_rows, u_rows, limit, ACT, HAS_BIAS),
             mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _moe_gemm1(x_ptr, w_ptr, s_ptr, b_ptr, h_ptr, ids_ptr, sorted_ptr, bexp_ptr,
               T, K, I, E, top_k, num_m, limit,
               stride_xm, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_hm,
               ACT: tl.constexpr, LAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr,
               DECODE: tl.constexpr, T_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, G: tl.constexpr, DEQ: tl.constexpr,
               EVEN_K: tl.constexpr):
    pid_m, pid_n, _ = _tile_ids(GROUP_M, num_m, tl.cdiv(I, BLOCK_N // 2))
    if DECODE:
        e, owns, match, rank, count = _owner(ids_ptr, pid_m, T, E, T_PAD)
        if owns:
            e64 = e.to(tl.int64)
            for c in range(0, count, BLOCK_M):
                rows, row_ok = _chunk_rows(match, rank, count, c, T_PAD, BLOCK_M)
                _gemm1_tile(x_ptr, w_ptr + e64 * stride_we, s_ptr + e64 * stride_se, b_ptr + e64 * stride_be,
                            h_ptr, rows, row_ok, pid_n, K, I, top_k, limit, stride_xm, stride_wn, stride_sn,
                            stride_hm, ACT, LAYOUT, HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, G, DEQ, EVEN_K)
    else:
        e = tl.load(bexp_ptr + pid_m)
        if e >= 0:
            e64 = e.to(tl.int64)
            rows = tl.load(sorted_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
            _gemm1_tile(x_ptr, w_ptr + e64 * stride_we, s_ptr + e64 * stride_se, b_ptr + e64 * stride_be,
                        h_ptr, rows, rows >= 0, pid_n, K, I, top_k, limit, stride_xm, stride_wn, stride_sn,
                        stride_hm, ACT, LAYOUT, HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, G, DEQ, EVEN_K)


@triton.jit
def _gemm2_tile(a_ptr, w_base, s_base, b_base, out_ptr, tw_ptr, rows, row_ok, pid_n, pid_k, N, KI, top_k,
                stride_am, stride_wn, stride_sn, stride_om,
                HAS_BIAS: tl.constexpr, PER_TOKEN: tl.constexpr, ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, G: tl.constexpr,
                DEQ: tl.constexpr, EVEN_K: tl.constexpr):
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = cols < N
    safe_cols = tl.where(n_ok, cols, 0)
    safe = tl.where(row_ok, rows, 0)
    k_per = tl.cdiv(tl.cdiv(KI, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = pid_k * k_per
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(k_lo, min(KI, k_lo + k_per), BLOCK_K):
        acc = _project(acc, a_ptr + safe * stride_am, w_base, s_base, safe_cols, k0, KI, stride_wn, stride_sn,
                       BLOCK_M, BLOCK_N, BLOCK_K, G, DEQ, EVEN_K)
    if DEQ != 2:
        acc = acc * 16384.0
    if HAS_BIAS:
        acc += tl.where(pid_k == 0, tl.load(b_base + safe_cols), 0.0)[None, :]
    acc = acc * tl.load(tw_ptr + safe)[:, None]
    if PER_TOKEN:
        dest = safe // top_k
    else:
        dest = safe
    ptrs = out_ptr + dest[:, None] * stride_om + cols[None, :]
    if ATOMIC:
        tl.atomic_add(ptrs, acc, mask=row_ok[:, None] & n_ok[None, :])
    else:
        tl.store(ptrs, acc, mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _moe_gemm2(a_ptr, w_ptr, s_ptr, b_ptr, out_ptr, tw_ptr, ids_ptr, sorted_ptr, bexp_ptr,
               T, N, KI, E, top_k, num_m,
               stride_am, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_om,
               HAS_BIAS: tl.constexpr, PER_TOKEN: tl.constexpr, ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr,
               DECODE: tl.constexpr, T_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, G: tl.constexpr, DEQ: tl.constexpr,
               EVEN_K: tl.constexpr):
    pid_m, pid_n, pid_k = _tile_ids(GROUP_M, num_m, tl.cdiv(N, BLOCK_N))
    if DECODE:
        e, owns, match, rank, count = _owner(ids_ptr, pid_m, T, E, T_PAD)
        if owns:
            e64 = e.to(tl.int64)
            for c in range(0, count, BLOCK_M):
                rows, row_ok = _chunk_rows(match, rank, count, c, T_PAD, BLOCK_M)
                _gemm2_tile(a_ptr, w_ptr + e64 * stride_we, s_ptr + e64 * stride_se, b_ptr + e64 * stride_be,
                            out_ptr, tw_ptr, rows, row_ok, pid_n, pid_k, N, KI, top_k, stride_am, stride_wn,
                            stride_sn, stride_om, HAS_BIAS, PER_TOKEN, ATOMIC, SPLIT_K, BLOCK_M, BLOCK_N,
                            BLOCK_K, G, DEQ, EVEN_K)
    else:
        e = tl.load(bexp_ptr + pid_m)
        if e >= 0:
            e64 = e.to(tl.int64)
            rows = tl.load(sorted_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
            _gemm2_tile(a_ptr, w_ptr + e64 * stride_we, s_ptr + e64 * stride_se, b_ptr + e64 * stride_be,
                        out_ptr, tw_ptr, rows, rows >= 0, pid_n, pid_k, N, KI, top_k, stride_am, stride_wn,
                        stride_sn, stride_om, HAS_BIAS, PER_TOKEN, ATOMIC, SPLIT_K, BLOCK_M, BLOCK_N,
                        BLOCK_K, G, DEQ, EVEN_K)


@triton.jit
def _moe_reduce(src_ptr, ids_ptr, out_ptr, N, E, top_k, scale, stride_sm, stride_om,
                PER_SLOT: tl.constexpr, TOPK_PAD: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    """out[m] = bf16(scale * sum of token m's slot rows) (PER_SLOT), or of its one fp32 row.

    The ids and rows of all top-k slots load at once (one memory round trip, not top_k dependent ones: a
    slot's row is read whatever its id and dropped by ``where`` when the id is invalid, so never-written
    rows of skipped slots cannot leak), then sum in a fixed order over the slots. PDL: the last launch of a
    chain (``_pdl``), it waits for the second GEMM first."""
    if PDL:
        gdc_wait()
    m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    if PER_SLOT:
        j = tl.arange(0, TOPK_PAD)
        e = tl.load(ids_ptr + m * top_k + j, mask=j < top_k, other=-1)
        valid = (e >= 0) & (e < E)
        rows = src_ptr + (m * top_k + j).to(tl.int64)[:, None] * stride_sm + cols[None, :]
        part = tl.load(rows, mask=(j < top_k)[:, None] & ok[None, :], other=0.0)
        acc = tl.sum(tl.where(valid[:, None], part, 0.0), axis=0)
    else:
        acc = tl.load(src_ptr + m * stride_sm + cols, mask=ok, other=0.0)
    tl.store(out_ptr + m * stride_om + cols, _bf16_rne(acc * scale), mask=ok)
