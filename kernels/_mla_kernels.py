"""Triton kernels of ``aotune.kernels.flash_mla``: the split-KV sparse decode and its combine step.

One program owns one query row (b, s), ``H_TILE`` heads (padded to ``HP = max(16, H_TILE)`` rows for
the MMA) and one split of the top-k positions (main cache, then the extra cache: one index space of
tiles of ``BLOCK_T`` tokens, cut into ``NUM_SPLITS`` equal ranges). The online softmax runs in exp2
space with a finite running-max sentinel (-1e30) and -inf for masked scores, so a fully masked tile
adds exactly nothing and never makes a NaN.

One bf16 K/V tile per step, two plain 2D MMAs: every tile is gathered as ``[BLOCK_T, 128]`` int32 words (4
raw fp8 values each, 16-byte loads), upcast in registers (e4m3 -> fp16 is exact), multiplied by its group's
scale in fp32 (v32: 4 groups of 128 with fp32 scales; v4: 7 groups of 64 with UE8M0 scales) and rounded once
to bf16 -- what DeepSeek's FlashMLA does. For v4 that rounding is exact (power-of-two scales, bf16 has
fp32's exponent range; the tile's eighth group of 64 columns is 0); for v32 the scaled value is rounded
(relative 2^-9 per element: lse relative error 3e-4, out 4e-3 where v4 measures 5e-8 and 2e-3, on the
interpreter at B 2, H 16, top-k 256; the tests allow 1e-3 and 1e-2). Then ``s = q . K^T + q_rope . rope^T``
with q in bf16 as given (never rounded after scaling: ``sm_scale * log2(e)`` multiplies the fp32 scores) and
``acc += bf16(p) @ K`` (V is K's first 512 columns; v4: ``acc_r += bf16(p) @ rope`` gives output columns
448-511). Before (kept in git history): a form batched over the quantization groups in fp16 that kept the
scales out of K; Nsight Compute showed it bound by shared memory (83% of the L1 pipe, half of its wavefronts
bank conflicts from the groups' cross-warp reductions and a second, transposed copy of each tile); this form
is 1.1-1.3x faster at B >= 64 (BENCHMARKS.md).

Latency: with ``STAGES`` (num_stages) 1-2 the loop is software-pipelined in registers (the next tile's
bytes are loaded before this tile's math, indices two tiles ahead), so every program keeps one tile of
gathers in flight. With 3 the loop is written plainly and Triton's pipeliner does the same through shared
memory (cp.async); for v4 at BLOCK_T 16 that form gave wrong outputs on the H200 and the config space
refuses it (``_mla_space.known_miscompile``). The combine kernel runs one program per (row, head, 128
columns) and loads all partials at once.

Gather safety: an index that is negative, past ``topk_length`` or past the cache's token count is
invalid; its address is clamped to token 0 and its loads are masked, so it is never read.
"""
from __future__ import annotations

import triton
import triton.language as tl

from aotune.kernels._pdl import gdc_launch_dependents, gdc_wait

LOG2E = 1.4426950408889634


@triton.jit
def split_range(split, T, TX, BLOCK_T: tl.constexpr, NUM_SPLITS: tl.constexpr):
    """(tiles of the main cache, first tile, end tile) of split ``split``: the main cache's tiles of ``BLOCK_T``
    positions, then the extra cache's, cut into ranges of ``ceil(tiles / NUM_SPLITS)``. Shared with the
    Gluon path (``_mla_mma``), which calls it on the same scalars."""
    tiles_main = tl.cdiv(T, BLOCK_T)
    tiles = tiles_main + tl.cdiv(TX, BLOCK_T)
    per_split = tl.cdiv(tiles, NUM_SPLITS)
    lo = split * per_split
    return tiles_main, lo, tl.minimum(lo + per_split, tiles)


@triton.jit
def row_limits(len_ptr, xlen_ptr, b, T, TX, HAS_LEN: tl.constexpr, HAS_XLEN: tl.constexpr):
    """Request ``b``'s valid positions in the main and the extra cache: ``T`` / ``TX`` cut by the lengths."""
    limit = T
    if HAS_LEN:
        limit = tl.minimum(T, tl.load(len_ptr + b))
    xlimit = TX
    if HAS_XLEN:
        xlimit = tl.minimum(TX, tl.load(xlen_ptr + b))
    return limit, xlimit


@triton.jit
def _tile_index(idx_ptr, xidx_ptr, row, tile, hi, tiles_main, T, TX, limit, xlimit, BLOCK_T: tl.constexpr):
    """Token ids [BLOCK_T] of tile ``tile`` (main cache below ``tiles_main``, then the extra cache), -1 where
    masked by the lengths; a tile >= ``hi`` (past this split) is all -1 and reads no memory."""
    main = tile < tiles_main
    t0 = tl.where(main, tile, tile - tiles_main) * BLOCK_T
    offs = t0 + tl.arange(0, BLOCK_T)
    ptr = tl.where(main, idx_ptr + row.to(tl.int64) * T, xidx_ptr + row.to(tl.int64) * TX)
    return tl.load(ptr + offs, mask=offs < tl.where(tile < hi, tl.where(main, limit, xlimit), 0), other=-1)


@triton.jit
def _gather(idx, u8, bf, f32, n_tok, page_stride, PAGE: tl.constexpr, LAYOUT: tl.constexpr, NC: tl.constexpr):
    """Raw fp8 values [BLOCK_T, 128] (int32 words), scales [BLOCK_T, NC] fp32 (0 where invalid), rope
    [BLOCK_T, 64] bf16 and validity [BLOCK_T] of the token ids ``idx``."""
    valid = (idx >= 0) & (idx < n_tok)
    idx = tl.where(valid, idx, 0)
    page = (idx // PAGE).to(tl.int64)
    off = idx % PAGE
    g = tl.arange(0, NC)[None, :]
    w = tl.arange(0, 128)[None, :]
    wmask = valid[:, None]
    if LAYOUT == 0:
        base = page * page_stride + off * 656
        sc = tl.load(f32 + (base // 4 + 128)[:, None] + g, mask=valid[:, None], other=0.0)
        rope = tl.load(bf + (base // 2 + 264)[:, None] + tl.arange(0, 64)[None, :], mask=valid[:, None], other=0.0)
    else:
        base = page * page_stride + off * 576
        wmask = wmask & (w < 112)  # words 112-127 are rope bytes: the eighth group stays 0
        sbase = page * page_stride + PAGE * 576 + off * 8
        e = tl.load(u8 + sbase[:, None] + g, mask=valid[:, None] & (g < 7), other=0)
        sc = (e.to(tl.int32) << 23).to(tl.float32, bitcast=True)  # UE8M0 2^(e - 127), exact
        rope = tl.load(bf + (base // 2 + 224)[:, None] + tl.arange(0, 64)[None, :], mask=valid[:, None], other=0.0)
    words = u8.to(tl.pointer_type(tl.int32), bitcast=True) + (base // 4)[:, None]
    raw = tl.load(words + w, mask=wmask, other=0)
    return raw, sc, rope, valid


@triton.jit
def _gather_tile(idx, tile, tiles_main, u8, bf, f32, n_tok, page_stride, xu8, xbf, xf32, x_n_tok, x_page_stride,
                 PAGE: tl.constexpr, LAYOUT: tl.constexpr, NC: tl.constexpr):
    """``_gather`` from the cache that tile ``tile`` belongs to."""
    main = tile < tiles_main
    return _gather(idx, tl.where(main, u8, xu8), tl.where(main, bf, xbf), tl.where(main, f32, xf32),
                   tl.where(main, n_tok, x_n_tok), tl.where(main, page_stride, x_page_stride), PAGE, LAYOUT, NC)


@triton.jit
def _fp8_byte(w, shift: tl.constexpr):
    """The fp8 e4m3 byte at bit ``shift`` of int32 words, as fp16, by integer ops (the interpreter and GPUs
    before sm_89, which have neither the conversion nor Triton's fp8e4nv): the sign to bit 15, exponent and
    mantissa to bits 7-13, then times 2^8 (e4m3's exponent bias is 7, fp16's 15). Exact, subnormals included;
    e4m3fn's NaN bytes (0x7F, 0xFF) give +-480, which no quantizer writes."""
    b = (w >> shift) & 0xFF
    bits = ((b & 0x80) << 8) | ((b & 0x7F) << 7)
    return (bits.to(tl.int16).to(tl.float16, bitcast=True) * 256.0).to(tl.float16)


@triton.jit
def _unpack_fp8(w, ASM: tl.constexpr):
    """[T, N] int32 words of 4 fp8 values -> [T, 4 N] fp16 (exact), in memory order. ``ASM``: two
    ``cvt.rn.f16x2.e4m3x2`` per word (GPU); otherwise byte extraction (the same values, for the interpreter)."""
    if ASM:
        b0, b1, b2, b3 = tl.inline_asm_elementwise(
            "{ .reg .b16 lo, hi; .reg .b32 a, b; mov.b32 {lo, hi}, $4; cvt.rn.f16x2.e4m3x2 a, lo; "
            "cvt.rn.f16x2.e4m3x2 b, hi; mov.b32 {$0, $1}, a; mov.b32 {$2, $3}, b; }",
            "=h,=h,=h,=h,r", [w], dtype=(tl.float16, tl.float16, tl.float16, tl.float16), is_pure=True, pack=1)
    else:
        b0, b1, b2, b3 = _fp8_byte(w, 0), _fp8_byte(w, 8), _fp8_byte(w, 16), _fp8_byte(w, 24)
    x = tl.join(tl.join(b0, b2), tl.join(b1, b3))
    return tl.reshape(x, [w.shape[0], 4 * w.shape[1]])


@triton.jit
def _dequant(raw, sc, NC: tl.constexpr, CW: tl.constexpr, ASM: tl.constexpr):
    """[T, 512] bf16 K/V values: fp8 times its group's scale in fp32, rounded once to bf16 (exact for v4's
    power-of-two scales; v4's eighth group is 0)."""
    kv = tl.reshape(_unpack_fp8(raw, ASM).to(tl.float32), [raw.shape[0], NC, CW]) * sc[:, :, None]
    return tl.reshape(kv, [raw.shape[0], 512]).to(tl.bfloat16)


@triton.jit
def _attend(q, q_rope, m, l, acc, acc_r, raw, sc, rope, valid, scale_log2, LAYOUT: tl.constexpr,
            NC: tl.constexpr, CW: tl.constexpr, ASM: tl.constexpr):
    """One online-softmax step over a tile (exp2 space); ``acc`` is [HP, 512]; v4: ``acc_r`` [HP, 64] is the
    rope part of the output (columns 448-511), whose values ``acc`` holds as zeros."""
    kv = _dequant(raw, sc, NC, CW, ASM)
    s = tl.dot(q, tl.trans(kv))
    s = tl.dot(q_rope, tl.trans(rope), s)
    s = tl.where(valid[None, :], s * scale_log2, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(s - m_new[:, None])
    l = l * alpha + tl.sum(p, 1)
    pb = p.to(tl.bfloat16)
    acc = tl.dot(pb, kv, acc * alpha[:, None])
    if LAYOUT == 1:
        acc_r = tl.dot(pb, rope, acc_r * alpha[:, None])
    return m_new, l, acc, acc_r


@triton.jit
def _store_rows(ptr, o, o_r, rows, hmask, LAYOUT: tl.constexpr):
    """Store [HP, 512] (v4: its first 448 columns, then the [HP, 64] rope part at column 448) as rows of 512."""
    cols = tl.arange(0, 512)[None, :]
    base = ptr + rows[:, None] * 512 + cols
    if LAYOUT == 0:
        tl.store(base, o.to(ptr.dtype.element_ty), mask=hmask[:, None])
    else:
        tl.store(base, o.to(ptr.dtype.element_ty), mask=hmask[:, None] & (cols < 448))
        tl.store(ptr + rows[:, None] * 512 + 448 + tl.arange(0, 64)[None, :], o_r.to(ptr.dtype.element_ty),
                 mask=hmask[:, None])


@triton.jit
def _finish(out_ptr, lse_ptr, sink_ptr, o, o_r, lse2, b, row, heads, hmask, H, S_q, LAYOUT: tl.constexpr,
            HAS_SINK: tl.constexpr, LONELY_POS: tl.constexpr):
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
    _store_rows(out_ptr, o, o_r, row.to(tl.int64) * H + heads, hmask, LAYOUT)


@triton.jit
def mla_decode_kernel(
    q_ptr, u8, bf, f32, idx_ptr, len_ptr, n_tok, page_stride, T,
    xu8, xbf, xf32, xidx_ptr, xlen_ptr, x_n_tok, x_page_stride, TX,
    sink_ptr, out_ptr, lse_ptr, part_o_ptr, part_lse_ptr, S_q, H, scale_log2,
    LAYOUT: tl.constexpr, PAGE: tl.constexpr, BLOCK_T: tl.constexpr, H_TILE: tl.constexpr, HP: tl.constexpr,
    NUM_SPLITS: tl.constexpr, HAS_LEN: tl.constexpr, HAS_XLEN: tl.constexpr, HAS_SINK: tl.constexpr,
    LONELY_POS: tl.constexpr, ASM: tl.constexpr, STAGES: tl.constexpr = 1, PDL: tl.constexpr = False,
):
    """Partial (or, with NUM_SPLITS == 1, final) attention of one (head tile, row, split). PDL: the first
    launch of a chain with the combine (``_pdl``), it lets the combine start."""
    if PDL:
        gdc_launch_dependents()
    pid_h = tl.program_id(0)
    row = tl.program_id(1)
    split = tl.program_id(2)
    b = row // S_q
    r = tl.arange(0, HP)
    heads = pid_h * H_TILE + r
    hmask = (r < H_TILE) & (heads < H)
    NC: tl.constexpr = 4 if LAYOUT == 0 else 8
    CW: tl.constexpr = 512 // NC
    D_QK: tl.constexpr = 576 if LAYOUT == 0 else 512
    NOPE: tl.constexpr = 512 if LAYOUT == 0 else 448
    qbase = q_ptr + (row.to(tl.int64) * H + heads) * D_QK
    cols = tl.arange(0, 512)[None, :]
    q = tl.load(qbase[:, None] + cols, mask=hmask[:, None] & (cols < NOPE), other=0.0)
    q_rope = tl.load(qbase[:, None] + NOPE + tl.arange(0, 64)[None, :], mask=hmask[:, None], other=0.0)
    m = tl.full([HP], -1e30, tl.float32)
    l = tl.zeros([HP], tl.float32)
    acc = tl.zeros([HP, 512], tl.float32)
    acc_r = tl.zeros([HP, 64], tl.float32)
    tiles_main, lo, hi = split_range(split, T, TX, BLOCK_T, NUM_SPLITS)
    limit, xlimit = row_limits(len_ptr, xlen_ptr, b, T, TX, HAS_LEN, HAS_XLEN)
    if STAGES > 2:
        # Triton's pipeliner: indices two tiles ahead, gathers one, through shared memory with cp.async.
        # Lower stage counts run the register pipeline below.
        for tile in tl.range(lo, hi, num_stages=STAGES):
            idx = _tile_index(idx_ptr, xidx_ptr, row, tile, hi, tiles_main, T, TX, limit, xlimit, BLOCK_T)
            raw, sc, rope, valid = _gather_tile(idx, tile, tiles_main, u8, bf, f32, n_tok, page_stride, xu8, xbf,
                                                xf32, x_n_tok, x_page_stride, PAGE, LAYOUT, NC)
            m, l, acc, acc_r = _attend(q, q_rope, m, l, acc, acc_r, raw, sc, rope, valid, scale_log2, LAYOUT, NC,
                                       CW, ASM)
    else:
        # Software pipeline in registers: the next tile's bytes are in flight while this tile is computed, and
        # the tile after it's indices are loaded a whole tile of compute ahead. Tiles >= hi load nothing.
        idx = _tile_index(idx_ptr, xidx_ptr, row, lo, hi, tiles_main, T, TX, limit, xlimit, BLOCK_T)
        raw, sc, rope, valid = _gather_tile(idx, lo, tiles_main, u8, bf, f32, n_tok, page_stride, xu8, xbf, xf32,
                                            x_n_tok, x_page_stride, PAGE, LAYOUT, NC)
        idx = _tile_index(idx_ptr, xidx_ptr, row, lo + 1, hi, tiles_main, T, TX, limit, xlimit, BLOCK_T)
        for tile in range(lo, hi):
            raw1, sc1, rope1, valid1 = _gather_tile(idx, tile + 1, tiles_main, u8, bf, f32, n_tok, page_stride,
                                                    xu8, xbf, xf32, x_n_tok, x_page_stride, PAGE, LAYOUT, NC)
            idx = _tile_index(idx_ptr, xidx_ptr, row, tile + 2, hi, tiles_main, T, TX, limit, xlimit, BLOCK_T)
            m, l, acc, acc_r = _attend(q, q_rope, m, l, acc, acc_r, raw, sc, rope, valid, scale_log2, LAYOUT, NC,
                                       CW, ASM)
            raw, sc, rope, valid = raw1, sc1, rope1, valid1
    inv = tl.where(l > 0, 1.0 / l, 0.0)
    lse2 = tl.where(l > 0, m + tl.log2(l), float("-inf"))
    o = acc * inv[:, None]
    o_r = acc_r * inv[:, None]
    if NUM_SPLITS == 1:
        _finish(out_ptr, lse_ptr, sink_ptr, o, o_r, lse2, b, row, heads, hmask, H, S_q, LAYOUT, HAS_SINK,
                LONELY_POS)
    else:
        prow = (row.to(tl.int64) * NUM_SPLITS + split) * H + heads
        tl.store(part_lse_ptr + prow, lse2, mask=hmask)
        _store_rows(part_o_ptr, o, o_r, prow, hmask, LAYOUT)


@triton.jit
def mla_combine_kernel(
    part_o_ptr, part_lse_ptr, sink_ptr, out_ptr, lse_ptr, S_q, H,
    NUM_SPLITS: tl.constexpr, CB: tl.constexpr, HAS_SINK: tl.constexpr, LONELY_POS: tl.constexpr,
    PDL: tl.constexpr = False,
):
    """Merge the fp32 split partials of one (row, head) and ``CB`` output columns by their lse, in fp32, then
    round once to bf16. The splits are unrolled, so their loads are issued together (one round trip), and each
    thread merges its own columns in registers (no cross-thread reduction, no barrier). Two passes in exp2
    space: the largest lse, then every split's weight against it (independent exponentials; an online merge
    would chain a max, two exponentials and a rescale per split). PDL: the second launch of a chain
    (``_pdl``), it waits for the split pass first."""
    if PDL:
        gdc_wait()
    row = tl.program_id(0)
    head = tl.program_id(1)
    cols = tl.program_id(2) * CB + tl.arange(0, CB)
    prow = row.to(tl.int64) * NUM_SPLITS * H + head  # split k of this (row, head) is partial row prow + k * H
    m = tl.full((), float("-inf"), tl.float32)
    for k in tl.static_range(NUM_SPLITS):  # a split without tokens has lse -inf
        m = tl.maximum(m, tl.load(part_lse_ptr + prow + k * H))
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros((), tl.float32)
    o = tl.zeros((CB,), tl.float32)
    for k in tl.static_range(NUM_SPLITS):
        w = tl.exp2(tl.load(part_lse_ptr + prow + k * H) - m_safe)
        total += w
        o += w * tl.load(part_o_ptr + (prow + k * H) * 512 + cols)
    o = o * tl.where(total > 0, 1.0 / total, 0.0)
    lse2 = tl.where(total > 0, m_safe + tl.log2(total), float("-inf"))
    lse = lse2 * 0.6931471805599453
    if HAS_SINK:
        o = o / (1.0 + tl.exp(tl.load(sink_ptr + head) - lse))
    if LONELY_POS:
        lse = tl.where(lse2 == float("-inf"), float("inf"), lse)
    if tl.program_id(2) == 0:
        tl.store(lse_ptr + ((row // S_q) * H + head) * S_q + row % S_q, lse)
    tl.store(out_ptr + (row.to(tl.int64) * H + head) * 512 + cols, o.to(tl.bfloat16))
