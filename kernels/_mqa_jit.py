"""Triton code of the MQA indexer logits kernel (paged FP8 cache and non-paged windows).

One program owns one row group (a batch entry with its N draft rows, or one query row of the
non-paged form) and a chunk of ``TILES * BLOCK_N`` consecutive tokens. Per token tile it loads the
fp8 keys and their fp32 scales once and multiplies them by the q of all rows and all heads (a head
block at a time): ``s [BLOCK_N, ROWS * BLOCK_H] = K @ q^T``, then ``relu(s * scale) * w`` summed over
heads. Tiles that no row of the group can see are not read; their logits are written as -inf.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _e4m3_to_bf16(x):
    """Exact float8_e4m3fn -> bf16 decode of uint8 bytes with integer ops (any target, no fp8 types).

    NaN bytes (0x7f, 0xff) decode to +-480; the kernel's inputs are finite by contract.
    """
    v = x.to(tl.uint32)
    sign = v >> 7
    exp = (v >> 3) & 15
    man = v & 7
    normal = ((sign << 31) | ((exp + 120) << 23) | (man << 20)).to(tl.float32, bitcast=True)
    sub = man.to(tl.float32) * 0.001953125
    sub = tl.where(sign == 1, -sub, sub)
    return tl.where(exp == 0, sub, normal).to(tl.bfloat16)


@triton.jit
def _load_q(q_ptr, w_ptr, rows, row_ok, h0, H: tl.constexpr, D: tl.constexpr, ROWS: tl.constexpr,
            BLOCK_H: tl.constexpr):
    """q of rows x heads [h0, h0 + BLOCK_H) as uint8 [ROWS * BLOCK_H, D] and their weights [ROWS * BLOCK_H]."""
    offs_h = h0 + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, D)
    qrow = rows.to(tl.int64)[:, None] * H + offs_h[None, :]
    mask = row_ok[:, None] & (offs_h < H)[None, :]
    q = tl.load(q_ptr + qrow[:, :, None] * D + offs_d[None, None, :], mask=mask[:, :, None], other=0)
    w = tl.load(w_ptr + qrow, mask=mask, other=0.0)
    return tl.reshape(q, (ROWS * BLOCK_H, D)), tl.reshape(w, (ROWS * BLOCK_H,))


@triton.jit
def _head_block(k, kscale, q, w, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
                FP8_DOT: tl.constexpr, RELU: tl.constexpr):
    """sum over the block's heads of w * act((q . k) * scale): fp32 [BLOCK_N, ROWS]."""
    if FP8_DOT:
        s = tl.dot(k.to(tl.float8e4nv, bitcast=True), tl.trans(q.to(tl.float8e4nv, bitcast=True)))
    else:
        s = tl.dot(_e4m3_to_bf16(k), tl.trans(_e4m3_to_bf16(q)))
    s = s * kscale[:, None]
    if RELU:
        s = tl.maximum(s, 0.0)
    s = s * w[None, :]
    return tl.sum(tl.reshape(s, (BLOCK_N, ROWS, BLOCK_H)), axis=2)


@triton.jit
def _row_windows(lo_ptr, hi_ptr, g, kv_len, stride_lens, N: tl.constexpr, ROWS: tl.constexpr,
                 PAGED: tl.constexpr, CAUSAL: tl.constexpr):
    """Row ids, row mask and each row's visible token window [lo, hi) (empty for padding rows)."""
    r = tl.arange(0, ROWS)
    row_ok = r < N
    rows = g * N + r
    if PAGED:
        lo = tl.zeros((ROWS,), dtype=tl.int32)
        if CAUSAL:
            hi = tl.load(lo_ptr + g) - N + 1 + r
        else:
            hi = tl.load(lo_ptr + g * stride_lens + r, mask=row_ok, other=0)
    else:
        lo = tl.maximum(tl.load(lo_ptr + rows, mask=row_ok, other=0), 0)
        hi = tl.load(hi_ptr + rows, mask=row_ok, other=0)
    hi = tl.where(row_ok, tl.minimum(hi, kv_len), 0)
    return rows, row_ok, lo, hi


@triton.jit
def _mqa_logits_kernel(
    q_ptr, k_ptr, ks_ptr, w_ptr, out_ptr, bt_ptr, lo_ptr, hi_ptr,
    num_cols, kv_len, max_blocks, stride_bt, stride_lens,
    H: tl.constexpr, D: tl.constexpr, N: tl.constexpr, ROWS: tl.constexpr,
    PAGED: tl.constexpr, CAUSAL: tl.constexpr, PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, TILES: tl.constexpr,
    FP8_DOT: tl.constexpr, RELU: tl.constexpr,
):
    g = tl.program_id(0)
    chunk_lo = tl.program_id(1) * (TILES * BLOCK_N)
    rows, row_ok, lo, hi = _row_windows(lo_ptr, hi_ptr, g, kv_len, stride_lens, N, ROWS, PAGED, CAUSAL)
    live = hi > lo
    lo_u = tl.min(tl.where(live, lo, kv_len), axis=0)
    hi_u = tl.max(tl.where(live, hi, 0), axis=0)
    first = (tl.minimum(tl.maximum(lo_u, chunk_lo), chunk_lo + TILES * BLOCK_N) - chunk_lo) // BLOCK_N
    last = tl.maximum((tl.minimum(hi_u, chunk_lo + TILES * BLOCK_N) - chunk_lo + BLOCK_N - 1) // BLOCK_N, first)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    out_rows = out_ptr + rows.to(tl.int64)[None, :] * num_cols
    neg = tl.full((BLOCK_N, ROWS), float("-inf"), tl.float32)
    for it in range(0, first):
        t = chunk_lo + it * BLOCK_N + offs_n
        tl.store(out_rows + t[:, None], neg, mask=(t < num_cols)[:, None] & row_ok[None, :])
    if BLOCK_H >= H:  # all heads in one block: q and w stay in registers for the whole chunk
        q0, w0 = _load_q(q_ptr, w_ptr, rows, row_ok, 0, H, D, ROWS, BLOCK_H)
    for it in range(first, last):
        t = chunk_lo + it * BLOCK_N + offs_n
        t_ok = t < hi_u
        if PAGED:
            page = tl.load(bt_ptr + g.to(tl.int64) * stride_bt + t // PAGE_SIZE,
                           mask=t_ok & (t // PAGE_SIZE < max_blocks), other=0).to(tl.int64)
            slot = t % PAGE_SIZE
            k = tl.load(k_ptr + (page * (PAGE_SIZE * (D + 4)) + slot * D)[:, None] + offs_d[None, :],
                        mask=t_ok[:, None], other=0)
            kscale = tl.load(ks_ptr + page * (PAGE_SIZE * (D + 4) // 4) + (PAGE_SIZE * D // 4) + slot,
                             mask=t_ok, other=0.0)
        else:
            k = tl.load(k_ptr + (t.to(tl.int64) * D)[:, None] + offs_d[None, :], mask=t_ok[:, None], other=0)
            kscale = tl.load(ks_ptr + t, mask=t_ok, other=0.0)
        acc = tl.zeros((BLOCK_N, ROWS), dtype=tl.float32)
        for h0 in tl.static_range(0, H, BLOCK_H):
            if BLOCK_H >= H:
                qt, wt = q0, w0
            else:
                qt, wt = _load_q(q_ptr, w_ptr, rows, row_ok, h0, H, D, ROWS, BLOCK_H)
            acc += _head_block(k, kscale, qt, wt, ROWS, BLOCK_N, BLOCK_H, FP8_DOT, RELU)
        valid = (t[:, None] >= lo[None, :]) & (t[:, None] < hi[None, :])
        tl.store(out_rows + t[:, None], tl.where(valid, acc, float("-inf")),
                 mask=(t < num_cols)[:, None] & row_ok[None, :])
    for it in range(last, TILES):
        t = chunk_lo + it * BLOCK_N + offs_n
        tl.store(out_rows + t[:, None], neg, mask=(t < num_cols)[:, None] & row_ok[None, :])


def grid_of(num_groups: int, num_cols: int, block_n: int, tiles: int) -> tuple[int, int]:
    """Launch grid: one program per (row group, chunk of ``tiles * block_n`` tokens)."""
    return (num_groups, triton.cdiv(num_cols, block_n * tiles))
