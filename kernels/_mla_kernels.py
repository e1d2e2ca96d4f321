"""Triton kernels of ``aotune.kernels.flash_mla``: the split-KV sparse decode and its combine step.

One program owns one query row (b, s), ``H_TILE`` heads (padded to ``HP = max(16, H_TILE)`` rows for
the MMA) and one split of the top-k positions (main cache, then the extra cache: one index space of
tiles of ``BLOCK_T`` tokens, cut into ``NUM_SPLITS`` equal ranges). Scores stay fp32: the dot is
``q . k`` on bf16 operands and ``sm_scale * log2(e)`` multiplies the fp32 result (q is never rounded
after scaling). The online softmax runs in exp2 space with a finite running-max sentinel (-1e30) and
-inf for masked scores, so a fully masked tile adds exactly nothing and never makes a NaN.

Gather safety: an index that is negative, past ``topk_length`` or past the cache's token count is
invalid; its address is clamped to token 0 and its loads are masked, so it is never read.

Layouts (``LAYOUT`` 0 = "v32", 1 = "v4"): the "k" tile is always [BLOCK_T, 512] (V4: the 448 nope
columns, 64 zero columns) dequantized to bf16, the "rope" tile [BLOCK_T, 64] bf16. V = k for v32
(d_v 512 = nope); V = [k[:, :448], rope] for v4. v32's fp32 scales make fp8 x scale inexact in bf16:
its scores use K = hi + lo (two bf16 dots, exact to ~2^-16), its V the hi part (one bf16 rounding).
V4's UE8M0 scales are powers of two, so its bf16 K/V are exact.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _load_tile(u8, bf, f32, idx_ptr, len_ptr, b, row, t0, T, n_tok, page_stride,
               PAGE: tl.constexpr, LAYOUT: tl.constexpr, BLOCK_T: tl.constexpr, HAS_LEN: tl.constexpr):
    offs = t0 + tl.arange(0, BLOCK_T)
    inside = offs < T
    if HAS_LEN:
        inside = inside & (offs < tl.load(len_ptr + b))
    idx = tl.load(idx_ptr + row.to(tl.int64) * T + offs, mask=inside, other=-1)
    valid = inside & (idx >= 0) & (idx < n_tok)
    idx = tl.where(valid, idx, 0)
    page = (idx // PAGE).to(tl.int64)
    off = idx % PAGE
    cols = tl.arange(0, 512)
    c64 = tl.arange(0, 64)
    if LAYOUT == 0:
        base = page * page_stride + off * 656
        raw = tl.load(u8 + base[:, None] + cols[None, :], mask=valid[:, None], other=0)
        sc = tl.load(f32 + (base // 4 + 128)[:, None] + tl.arange(0, 4)[None, :], mask=valid[:, None], other=0.0)
        x = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        k = tl.reshape(tl.reshape(x, (BLOCK_T, 4, 128)) * sc[:, :, None], (BLOCK_T, 512))
        rope = tl.load(bf + (base // 2 + 264)[:, None] + c64[None, :], mask=valid[:, None], other=0.0)
    else:
        base = page * page_stride + off * 576
        raw = tl.load(u8 + base[:, None] + cols[None, :], mask=valid[:, None] & (cols[None, :] < 448), other=0)
        j = tl.arange(0, 8)
        e = tl.load(u8 + (page * page_stride + PAGE * 576 + off * 8)[:, None] + j[None, :],
                    mask=valid[:, None] & (j[None, :] < 7), other=127)
        sc = tl.exp2(e.to(tl.float32) - 127.0)
        x = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        k = tl.reshape(tl.reshape(x, (BLOCK_T, 8, 64)) * sc[:, :, None], (BLOCK_T, 512))
        rope = tl.load(bf + (base // 2 + 224)[:, None] + c64[None, :], mask=valid[:, None], other=0.0)
    k_hi = k.to(tl.bfloat16)
    if LAYOUT == 0:
        k_lo = (k - k_hi.to(tl.float32)).to(tl.bfloat16)  # fp32 scales: bf16(x * s) is not exact
    else:
        k_lo = k_hi  # UE8M0 scales: x * 2^e is exact in bf16, no low part
    return k_hi, k_lo, rope, valid


@triton.jit
def _attend(q, q_rope, m, l, acc, acc_r, k, k_lo, rope, valid, scale_log2, LAYOUT: tl.constexpr):
    s = tl.dot(q_rope, tl.trans(rope), tl.dot(q, tl.trans(k)))
    if LAYOUT == 0:
        s = tl.dot(q, tl.trans(k_lo), s)  # scores from the exact fp32 K = k + k_lo
    s = tl.where(valid[None, :], s * scale_log2, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(s - m_new[:, None])
    l = l * alpha + tl.sum(p, 1)
    pb = p.to(tl.bfloat16)
    acc = tl.dot(pb, k, acc * alpha[:, None])
    if LAYOUT == 1:
        acc_r = tl.dot(pb, rope, acc_r * alpha[:, None])
    return m_new, l, acc, acc_r


@triton.jit
def _finish(out_ptr, lse_ptr, sink_ptr, o, o_r, lse2, b, row, heads, hmask, H, S_q,
            LAYOUT: tl.constexpr, HAS_SINK: tl.constexpr, LONELY_POS: tl.constexpr):
    """Sink scaling, lonely rows and the bf16/fp32 stores of one row's heads (``lse2`` is log2-space)."""
    lse = lse2 * 0.6931471805599453  # ln(2): back to natural-log units
    if HAS_SINK:
        sink = tl.load(sink_ptr + heads, mask=hmask, other=0.0)
        factor = 1.0 / (1.0 + tl.exp(sink - lse))
        o = o * factor[:, None]
        o_r = o_r * factor[:, None]
    if LONELY_POS:
        lse = tl.where(lse2 == float("-inf"), float("inf"), lse)
    tl.store(lse_ptr + (b * H + heads) * S_q + row % S_q, lse, mask=hmask)
    cols = tl.arange(0, 512)
    obase = out_ptr + (row.to(tl.int64) * H + heads)[:, None] * 512
    if LAYOUT == 0:
        tl.store(obase + cols[None, :], o.to(tl.bfloat16), mask=hmask[:, None])
    else:
        tl.store(obase + cols[None, :], o.to(tl.bfloat16), mask=hmask[:, None] & (cols[None, :] < 448))
        tl.store(obase + 448 + tl.arange(0, 64)[None, :], o_r.to(tl.bfloat16), mask=hmask[:, None])


@triton.jit
def mla_decode_kernel(
    q_ptr, u8, bf, f32, idx_ptr, len_ptr, n_tok, page_stride, T,
    xu8, xbf, xf32, xidx_ptr, xlen_ptr, x_n_tok, x_page_stride, TX,
    sink_ptr, out_ptr, lse_ptr, part_o_ptr, part_lse_ptr, S_q, H, scale_log2,
    LAYOUT: tl.constexpr, PAGE: tl.constexpr, BLOCK_T: tl.constexpr, H_TILE: tl.constexpr, HP: tl.constexpr,
    NUM_SPLITS: tl.constexpr, HAS_LEN: tl.constexpr, HAS_XLEN: tl.constexpr, HAS_SINK: tl.constexpr,
    LONELY_POS: tl.constexpr,
):
    """Partial (or, with NUM_SPLITS == 1, final) attention of one (head tile, row, split)."""
    pid_h = tl.program_id(0)
    row = tl.program_id(1)
    split = tl.program_id(2)
    b = row // S_q
    r = tl.arange(0, HP)
    heads = pid_h * H_TILE + r
    hmask = (r < H_TILE) & (heads < H)
    D_QK: tl.constexpr = 576 if LAYOUT == 0 else 512
    NOPE: tl.constexpr = 512 if LAYOUT == 0 else 448
    cols = tl.arange(0, 512)
    qbase = q_ptr + (row.to(tl.int64) * H + heads)[:, None] * D_QK
    q = tl.load(qbase + cols[None, :], mask=hmask[:, None] & (cols[None, :] < NOPE), other=0.0)
    q_rope = tl.load(qbase + NOPE + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    m = tl.full([HP], -1e30, tl.float32)
    l = tl.zeros([HP], tl.float32)
    acc = tl.zeros([HP, 512], tl.float32)
    acc_r = tl.zeros([HP, 64], tl.float32)
    tiles_main = tl.cdiv(T, BLOCK_T)
    tiles = tiles_main + tl.cdiv(TX, BLOCK_T)
    per_split = tl.cdiv(tiles, NUM_SPLITS)
    lo = split * per_split
    hi = tl.minimum(lo + per_split, tiles)
    for tile in range(lo, tl.minimum(hi, tiles_main)):
        k, k_lo, rope, valid = _load_tile(u8, bf, f32, idx_ptr, len_ptr, b, row, tile * BLOCK_T, T, n_tok, page_stride,
                                    PAGE, LAYOUT, BLOCK_T, HAS_LEN)
        m, l, acc, acc_r = _attend(q, q_rope, m, l, acc, acc_r, k, k_lo, rope, valid, scale_log2, LAYOUT)
    for tile in range(tl.maximum(lo, tiles_main) - tiles_main, hi - tiles_main):
        k, k_lo, rope, valid = _load_tile(xu8, xbf, xf32, xidx_ptr, xlen_ptr, b, row, tile * BLOCK_T, TX, x_n_tok,
                                    x_page_stride, PAGE, LAYOUT, BLOCK_T, HAS_XLEN)
        m, l, acc, acc_r = _attend(q, q_rope, m, l, acc, acc_r, k, k_lo, rope, valid, scale_log2, LAYOUT)
    inv = tl.where(l > 0, 1.0 / l, 0.0)
    lse2 = tl.where(l > 0, m + tl.log2(l), float("-inf"))
    o = acc * inv[:, None]
    o_r = acc_r * inv[:, None]
    if NUM_SPLITS == 1:
        _finish(out_ptr, lse_ptr, sink_ptr, o, o_r, lse2, b, row, heads, hmask, H, S_q, LAYOUT, HAS_SINK, LONELY_POS)
    else:
        prow = (row.to(tl.int64) * NUM_SPLITS + split) * H + heads
        tl.store(part_lse_ptr + prow, lse2, mask=hmask)
        pbase = part_o_ptr + prow[:, None] * 512
        if LAYOUT == 0:
            tl.store(pbase + cols[None, :], o, mask=hmask[:, None])
        else:
            tl.store(pbase + cols[None, :], o, mask=hmask[:, None] & (cols[None, :] < 448))
            tl.store(pbase + 448 + tl.arange(0, 64)[None, :], o_r, mask=hmask[:, None])


@triton.jit
def mla_combine_kernel(
    part_o_ptr, part_lse_ptr, sink_ptr, out_ptr, lse_ptr, S_q, H,
    NUM_SPLITS: tl.constexpr, HB: tl.constexpr, HAS_SINK: tl.constexpr, LONELY_POS: tl.constexpr,
):
    """Merge the fp32 split partials of ``HB`` heads of one row by their lse, then finish in bf16."""
    row = tl.program_id(0)
    heads = tl.program_id(1) * HB + tl.arange(0, HB)
    hmask = heads < H
    b = row // S_q
    m = tl.full([HB], float("-inf"), tl.float32)
    for s in tl.static_range(NUM_SPLITS):
        lse_s = tl.load(part_lse_ptr + (row.to(tl.int64) * NUM_SPLITS + s) * H + heads, mask=hmask,
                        other=float("-inf"))
        m = tl.maximum(m, lse_s)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros([HB], tl.float32)
    acc = tl.zeros([HB, 512], tl.float32)
    cols = tl.arange(0, 512)
    for s in tl.static_range(NUM_SPLITS):
        prow = (row.to(tl.int64) * NUM_SPLITS + s) * H + heads
        w = tl.exp2(tl.load(part_lse_ptr + prow, mask=hmask, other=float("-inf")) - m_safe)
        total += w
        acc += w[:, None] * tl.load(part_o_ptr + prow[:, None] * 512 + cols[None, :], mask=hmask[:, None], other=0.0)
    lse2 = tl.where(total > 0, m_safe + tl.log2(total), float("-inf"))
    o = acc * tl.where(total > 0, 1.0 / total, 0.0)[:, None]
    # The partial rows already hold all 512 columns of V (v4: [448, 512) is the rope part): store as v32.
    _finish(out_ptr, lse_ptr, sink_ptr, o, o, lse2, b, row, heads, hmask, H, S_q, 0, HAS_SINK, LONELY_POS)
