"""Tensor-core path of the sparse MLA decode for at most 8 heads per program (config ``PATH="mma"``,
``H_TILE=8``): the heads on the MMA's N side. Gluon, NVIDIA sm_89+ only.

``_mla_mma`` puts 16 head rows on the MMA's M side; with 8 heads on the rank (DeepSeek-V4-Flash at TP 8) half
of every MMA, of the score and weight math and of the PV accumulator is padding. Here the products are
transposed, so that the 8 heads are the N of ``mma.sync.m16n8k16`` and the tokens and dims its M:

- QK: ``s_w^T [BT, 8] = K_w [BT, dims] . q_w^T [dims, 8]``: the K tile is the A operand, made in place from
  the loaded bytes exactly as ``_mla_mma`` makes its B operand (an A fragment is two B fragments stacked in
  M), q^T the B operand (held in registers: 18 of them instead of 36).
- PV: ``acc_w^T [dims, 8] += V_w^T [dims, BT] . W^T [BT, 8]``: V^T is the K operand transposed per 8 x 8
  block in registers (``movmatrix``), and so are the weights (from the accumulator layout, tokens x heads,
  to a B fragment); the accumulator is [4, 64, 8] per half: 32 registers for both halves, not 64.

Everything else is ``_mla_mma``'s, reused from there where the layout does not change: the gathers, the warps
splitting the dims (warp w: bytes 128 w .. 128 w + 127 and rope dims 16 w .. 16 w + 15), the permuted K order,
the scores summed over the warps through shared memory with the tile's largest scale, the PV weights in
fp16 relative to a per-head reference raised only when needed (``REBASE``), and the same roundings.
Measured on the H100 at V4-Flash TP 8 (BENCHMARKS.md, FlashMLA, twentieth session): at BLOCK_T 32 (250
registers, 767 loop instructions per 32 tokens against the 16-row kernel's 636 per 16) 1.06-1.23x the 16-row
kernel at B = 8-256, the same at B = 1.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

from aotune.kernels._mla_mma import (_fp8x4_f16, _gather_tile, _mma3, _online_step, _raw_layout, _rope_layout,
                                     _scaled_q, _split_start, _store_layout, _store_result, _tile_ids, _top_layout)
from aotune.kernels._pdl import gl_gdc_launch_dependents

HN = gl.constexpr(8)  # heads per program (the MMA's N)


@gluon.constexpr_function
def _a_op():
    return gl.DotOperandLayout(operand_index=0, parent=_mma3(), k_width=2)


@gluon.constexpr_function
def _b_op():
    return gl.DotOperandLayout(operand_index=1, parent=_mma3(), k_width=2)


@gluon.constexpr_function
def _q8_layout(K):
    """[4, 8, K] q in memory order (K = 64: a half, 16: the rope dims): each thread one run of 16 (rope: 4)
    adjacent dims of a head, so that the relabelling to [4, K (permuted), 8] (``_q_operand``) is exactly the
    B operand's registers (lane l: head l // 4)."""
    runs = [[0, 0, 1 << i] for i in range((K // 4 if K == 64 else 4).bit_length() - 1)]
    return gl.DistributedLinearLayout(
        reg_bases=runs, lane_bases=[[0, 0, K // 4], [0, 0, K // 2], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
        warp_bases=[[1, 0, 0], [2, 0, 0]], block_bases=[], shape=[4, HN, K])


@gluon.constexpr_function
def _sum_layout(bt):
    """[4, BT, 8] partial scores as loaded back by every warp: the MMA accumulator's positions with the warp
    axis in registers (all four warps' values of a thread's positions)."""
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 1]] + [[0, 8 << i, 0] for i in range((bt // 8).bit_length() - 1)] + [[1, 0, 0], [2, 0, 0]],
        lane_bases=[[0, 0, 2], [0, 0, 4], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
        warp_bases=[[0, 0, 0], [0, 0, 0]], block_bases=[], shape=[4, bt, HN])


@gluon.jit
def _exchange(part, top, buf, top_buf, BT: gl.constexpr):
    """Sum over the warps of the partial scores [4, BT, 8] -> [BT, 8] held by every warp, and the largest of
    the warps' ``top`` [4]: one store, one barrier, one load (as ``_mla_mma._exchange``)."""
    buf.store(part)
    top_buf.store(top)
    total = gl.sum(buf.load(_sum_layout(BT)), axis=0)
    return (gl.convert_layout(total, gl.SliceLayout(0, _mma3()), assert_trivial=True),
            gl.max(top_buf.load(_top_layout()), axis=0))


@gluon.jit
def _k_operands(raw, BT: gl.constexpr):
    """Raw words [4, BT, 32] -> the two halves' QK A operands [4, BT, 64 (k)] fp16 in the permuted K order
    (memory byte 16c + 4j + 2f + e of a half is k e + 2c + 8f + 16j, as in ``_mla_mma``)."""
    b0, b1, b2, b3 = _fp8x4_f16(raw)
    x = gl.join(gl.join(b0, b2), gl.join(b1, b3))  # [4, BT, 32 words, 2 (pair f), 2 (elem e)]: memory order
    # word = 16 hh + 4 c + j -> [w, t, hh, c, j, f, e]; logical k = e + 2c + 8f + 16j -> [w, t, j, f, c, e, hh]
    x = x.reshape((4, BT, 2, 4, 4, 2, 2)).permute((0, 1, 4, 5, 3, 6, 2)).reshape((4, BT, 64, 2))
    k0, k1 = gl.split(x)
    return gl.convert_layout(k0, _a_op(), assert_trivial=True), gl.convert_layout(k1, _a_op(), assert_trivial=True)


@gluon.jit
def _rope_operand(rope, BT: gl.constexpr):
    """Rope [4, BT, 16] bf16 -> the QK A operand [4, BT, 16 (k)]: memory dim 4c + 2f + e is k e + 2c + 8f."""
    x = rope.reshape((4, BT, 4, 2, 2)).permute((0, 1, 3, 2, 4)).reshape((4, BT, 16))
    return gl.convert_layout(x, _a_op(), assert_trivial=True)


@gluon.jit
def _movmatrix(x):
    """Each 8 x 8 block of 16-bit values transposed across the warp (``movmatrix.trans``): lane l's pair of
    row l // 4, columns 2 (l % 4) + e, becomes that of row 2 (l % 4) + e ... i.e. element (i, j) of a block
    now holds the block's (j, i); the caller swaps the labels."""
    return gl.inline_asm_elementwise("movmatrix.sync.aligned.m8n8.trans.b16 $0, $1;", "=r,r", [x],
                                     dtype=x.dtype, is_pure=True, pack=2)


@gluon.jit
def _v_operand(k_op, BT: gl.constexpr, K: gl.constexpr):
    """A QK A operand [4, BT (tokens), K (dims)] -> the PV A operand [4, K, BT], in registers: after
    ``movmatrix`` the element labelled (token 8 tb + i, dim 8 kb + j) holds token 8 tb + j, dim 8 kb + i, so
    the relabelled tensor [w, kb, i, tb, j] is V^T."""
    x = _movmatrix(k_op).reshape((4, BT // 8, 8, K // 8, 8)).permute((0, 3, 2, 1, 4)).reshape((4, K, BT))
    return gl.convert_layout(x, _a_op(), assert_trivial=True)


@gluon.jit
def _weights(w, BT: gl.constexpr):
    """PV weights [4, BT, 8] (accumulator layout, 16-bit) -> the PV B operand [4, BT (k), 8 (n)]: after
    ``movmatrix`` the element labelled (token 8 tb + i, head j) holds token 8 tb + j, head i."""
    x = _movmatrix(w).reshape((4, BT // 8, 8, 8)).permute((0, 1, 3, 2)).reshape((4, BT, HN))
    return gl.convert_layout(x, _b_op(), assert_trivial=True)


@gluon.jit
def _q_operand(q, K: gl.constexpr):
    """q [4, 8, K] in memory order (``_q8_layout``) -> the B operand q^T [4, K (permuted), 8]: K = 64: memory
    16c + 4j + 2f + e is k e + 2c + 8f + 16j; K = 16: memory 4c + 2f + e is k e + 2c + 8f."""
    if K == 64:
        x = q.reshape((4, HN, 4, 4, 2, 2)).permute((0, 3, 4, 2, 5, 1)).reshape((4, 64, HN))
    else:
        x = q.reshape((4, HN, 4, 2, 2)).permute((0, 3, 2, 4, 1)).reshape((4, 16, HN))
    return gl.convert_layout(x, _b_op(), assert_trivial=True)


@gluon.jit
def _load_q(q_ptr, rows, hmask, LAYOUT: gl.constexpr):
    """q of the program's 8 heads as fp16 B operands (two halves [4, 64, 8] in the permuted K order), scaled
    per head by a power of two (``_mla_mma._scaled_q``), the rope B operand [4, 16, 8] bf16 (same factor) and
    the factors' inverse [8] (head layout)."""
    heads_l: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, _mma3()))
    q0, q1, qr, up = _scaled_q(q_ptr, rows, hmask, LAYOUT, _q8_layout(64), _q8_layout(16), heads_l)
    return (_q_operand(q0.to(gl.float16), 64), _q_operand(q1.to(gl.float16), 64), _q_operand(qr.to(gl.bfloat16), 16),
            up)


@gluon.jit
def _attend(q0, q1, qr, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, raw, rope, sc0, sc1,
            sbuf, top_buf, LAYOUT: gl.constexpr, BT: gl.constexpr):
    """One online-softmax step over a tile (exp2 space), as ``_mla_mma._attend`` with the products
    transposed: scores [BT, 8], accumulators [4, dims, 8]; ``sc0`` / ``sc1`` [4, BT] come in the load layout
    (-1 marks an invalid token)."""
    mma: gl.constexpr = _mma3()
    sc_l: gl.constexpr = gl.SliceLayout(2, mma)
    sc0 = gl.convert_layout(sc0, sc_l)
    if LAYOUT == 0:
        sc1 = sc0
    else:
        sc1 = gl.convert_layout(sc1, sc_l)
    k0, k1 = _k_operands(raw, BT)
    r_op = _rope_operand(rope, BT)
    zero = gl.zeros((4, BT, HN), gl.float32, layout=mma)
    bias = gl.where(sc0 >= 0, 0.0, float("-inf"))[:, :, None]  # an invalid token's score is -inf in every warp
    if LAYOUT == 0:  # one scale group per warp
        part = mma_v2(k1, q1, mma_v2(k0, q0, zero)) * sc0[:, :, None] + bias
    else:
        part = mma_v2(k0, q0, zero) * sc0[:, :, None] + bias + mma_v2(k1, q1, zero) * sc1[:, :, None]
    part = mma_v2(r_op, qr, part)
    if LAYOUT == 0:
        top = gl.max(sc0, axis=1)
    else:
        top = gl.max(gl.maximum(sc0, sc1), axis=1)
    s, top_scale = _exchange(part, top, sbuf, top_buf, BT)  # [BT, 8]: the warps' partial scores, summed
    m_new, p, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r = _online_step(
        s, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, top_scale, LAYOUT, True)
    pw = (p * inv_ref[None, :])[None, :, :]
    w0 = _weights((pw * sc0[:, :, None]).to(gl.float16), BT)
    if LAYOUT == 0:
        w1 = w0
    else:
        w1 = _weights((pw * sc1[:, :, None]).to(gl.float16), BT)
    acc0 = mma_v2(_v_operand(k0, BT, 64), w0, acc0)
    acc1 = mma_v2(_v_operand(k1, BT, 64), w1, acc1)
    if LAYOUT == 1:  # the rope values are output columns 448-511
        wr = _weights(gl.broadcast((p * inv_r[None, :])[None, :, :], zero)[0].to(gl.bfloat16), BT)
        acc_r = mma_v2(_v_operand(r_op, BT, 16), wr, acc_r)
    return m_new, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r


@gluon.jit
def _unpermute(acc, N: gl.constexpr):
    """[4, 64, 8] (half) or [4, 16, 8] (rope) in logical k order -> [8, 4, N] in memory order of the warp's
    dims."""
    if N == 64:  # logical e + 2c + 8f + 16j -> memory 16c + 4j + 2f + e
        out = acc.reshape((4, 4, 2, 4, 2, HN)).permute((5, 0, 3, 1, 2, 4)).reshape((HN, 4, 64))
    else:  # logical e + 2c + 8f -> memory 4c + 2f + e
        out = acc.reshape((4, 2, 4, 2, HN)).permute((4, 0, 2, 1, 3)).reshape((HN, 4, 16))
    return out


@gluon.jit
def _output(acc0, acc1, acc_r, ref, ref_r, inv):
    """Normalized output [8, 512] and v4's rope columns [8, 64] in memory order (store layout)."""
    unit = (inv * ref)[None, :][None, :, :]
    o = gl.join(_unpermute(acc0 * unit, 64), _unpermute(acc1 * unit, 64)).permute((0, 1, 3, 2)).reshape((HN, 512))
    o_r = _unpermute(acc_r * (inv * ref_r)[None, :][None, :, :], 16).reshape((HN, 64))  # column 448 + 16 w + dd
    st: gl.constexpr = _store_layout()
    return gl.convert_layout(o, st), gl.convert_layout(o_r, st)


@gluon.jit
def _ring_loop(q0, q1, qr, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, sbuf, top_buf, ids,
               ids_next, idx_ptr, xidx_ptr, row, lo, hi, tiles_main, T, TX, limit, xlimit, u8, xu8, bf, xbf, f32,
               xf32, n_tok, x_n_tok, pw_main, pw_extra, PAGE: gl.constexpr, LAYOUT: gl.constexpr, BT: gl.constexpr,
               RING: gl.constexpr):
    """The step loop with the tiles' words and rope in a ring of RING (3) shared-memory slots: tile i + 2's
    copies (cp.async) are issued before tile i is waited for, so two tiles' gathers are in flight while one
    computes, without holding them in registers (the register loop holds one, ``mla_decode_mma8_kernel``).
    The scales (a few registers per tile) are loaded two tiles ahead into registers, the ids three. Each
    thread reads back exactly the words it copied (the loads' own layouts), so no barrier guards a slot: its
    refill is issued after the tile it held was consumed by that thread's MMAs. The raw slots swizzle 64-byte
    halves by token parity, so that the two tokens of a 16-byte load phase hit different banks."""
    raw_sh: gl.constexpr = gl.SwizzledSharedLayout(16, 1, 2, order=[2, 1, 0])
    raws = gl.allocate_shared_memory(gl.int32, [RING, 4, BT, 32], raw_sh)
    ropes = gl.allocate_shared_memory(gl.bfloat16, [RING, 4, BT, 16],
                                      gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0]))
    ids_l: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(2, _raw_layout(BT)))
    ids_2 = _tile_ids(idx_ptr, xidx_ptr, row, lo + 2, hi, tiles_main, T, TX, limit, xlimit, BT, ids_l, True)
    _, _, sc0, sc1 = _gather_tile(ids, lo, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok, x_n_tok, pw_main,
                                  pw_extra, PAGE, LAYOUT, BT, raws.index(0), ropes.index(0), True)
    _, _, sc0_n, sc1_n = _gather_tile(ids_next, lo + 1, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok, x_n_tok,
                                      pw_main, pw_extra, PAGE, LAYOUT, BT, raws.index(1), ropes.index(1), True)
    ids = ids_2
    for tile in range(lo, hi):
        i = tile - lo
        ahead = (i + 2) % RING  # the slot tile i - 1 held, consumed in the last step
        _, _, sc0_a, sc1_a = _gather_tile(ids, tile + 2, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok, x_n_tok,
                                          pw_main, pw_extra, PAGE, LAYOUT, BT, raws.index(ahead), ropes.index(ahead),
                                          True)
        ids = _tile_ids(idx_ptr, xidx_ptr, row, tile + 3, hi, tiles_main, T, TX, limit, xlimit, BT, ids_l)
        async_copy.wait_group(RING - 1)  # tile i's group has landed; the next two may be in flight
        raw = raws.index(i % RING).load(_raw_layout(BT))
        rope = ropes.index(i % RING).load(_rope_layout(BT))
        m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r = _attend(
            q0, q1, qr, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, raw, rope, sc0, sc1, sbuf,
            top_buf, LAYOUT, BT)
        sc0, sc1, sc0_n, sc1_n = sc0_n, sc1_n, sc0_a, sc1_a
    async_copy.wait_group(0)  # the copies past the last tile (masked: zeros) before the slots are released
    return m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r


@gluon.jit
def mla_decode_mma8_kernel(
    q_ptr, u8, bf, f32, idx_ptr, len_ptr, n_tok, page_stride, T,
    xu8, xbf, xf32, xidx_ptr, xlen_ptr, x_n_tok, x_page_stride, TX,
    sink_ptr, out_ptr, lse_ptr, part_o_ptr, part_lse_ptr, ticket_ptr, S_q, H, scale_log2,
    LAYOUT: gl.constexpr, PAGE: gl.constexpr, BLOCK_T: gl.constexpr, H_TILE: gl.constexpr,
    NUM_SPLITS: gl.constexpr, HAS_LEN: gl.constexpr, HAS_XLEN: gl.constexpr, HAS_SINK: gl.constexpr,
    LONELY_POS: gl.constexpr, PDL: gl.constexpr = False, FUSED: gl.constexpr = False, RING: gl.constexpr = 1,
):
    """Partial (or, with NUM_SPLITS == 1, final) attention of one (8-head tile, row, split); the arguments
    and the loop are those of ``_mla_mma.mla_decode_mma_kernel``. RING 3 (config num_stages 3): the tiles'
    words and rope go through a ring of three shared-memory slots (cp.async), two tiles ahead (``_ring_loop``)."""
    gl.static_assert(H_TILE == HN, "the heads-as-N path runs 8 heads per program")
    gl.static_assert((RING == 1) | (RING == 3), "RING: 1 (registers) or 3 (shared-memory ring)")
    if PDL:
        gl_gdc_launch_dependents()
    mma: gl.constexpr = _mma3()
    heads_l: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, mma))
    ids_l: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(2, _raw_layout(BLOCK_T)))
    pid_h = gl.program_id(0)
    row = gl.program_id(1)
    split = gl.program_id(2)
    b = row // S_q
    heads = pid_h * HN + gl.arange(0, HN, layout=heads_l)
    hmask = heads < H
    qrows = row.to(gl.int64) * H + heads
    tiles_main, lo, hi, limit, xlimit, ids, ids_next = _split_start(
        idx_ptr, xidx_ptr, len_ptr, xlen_ptr, row, split, b, T, TX, BLOCK_T, NUM_SPLITS, HAS_LEN, HAS_XLEN, ids_l)
    q0, q1, qr, up = _load_q(q_ptr, qrows, hmask, LAYOUT)
    qk_scale = up * scale_log2
    m = gl.full((HN,), -1e30, gl.float32, layout=heads_l)
    l = gl.zeros((HN,), gl.float32, layout=heads_l)
    acc0 = gl.zeros((4, 64, HN), gl.float32, layout=mma)
    acc1 = gl.zeros((4, 64, HN), gl.float32, layout=mma)
    acc_r = gl.zeros((4, 16, HN), gl.float32, layout=mma)
    ref = gl.zeros((HN,), gl.float32, layout=heads_l)  # acc0 and acc1 are in units of ref (``_mla_mma.REBASE``)
    ref_r = gl.zeros((HN,), gl.float32, layout=heads_l)
    inv_ref = gl.zeros((HN,), gl.float32, layout=heads_l)
    inv_r = gl.zeros((HN,), gl.float32, layout=heads_l)
    sbuf = gl.allocate_shared_memory(gl.float32, [4, BLOCK_T, HN], gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0]))
    top_buf = gl.allocate_shared_memory(gl.float32, [4], gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    pw_main = (page_stride // 4).to(gl.uint32).to(gl.uint64)
    pw_extra = (x_page_stride // 4).to(gl.uint32).to(gl.uint64)
    if RING == 1:
        raw, rope, sc0, sc1 = _gather_tile(ids, lo, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok, x_n_tok,
                                           pw_main, pw_extra, PAGE, LAYOUT, BLOCK_T)
        ids = ids_next
        for tile in range(lo, hi):
            raw1, rope1, sc01, sc11 = _gather_tile(ids, tile + 1, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok,
                                                   x_n_tok, pw_main, pw_extra, PAGE, LAYOUT, BLOCK_T)
            ids = _tile_ids(idx_ptr, xidx_ptr, row, tile + 2, hi, tiles_main, T, TX, limit, xlimit, BLOCK_T, ids_l)
            m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r = _attend(
                q0, q1, qr, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, raw, rope, sc0, sc1,
                sbuf, top_buf, LAYOUT, BLOCK_T)
            raw, rope, sc0, sc1 = raw1, rope1, sc01, sc11
    else:
        m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r = _ring_loop(
            q0, q1, qr, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, sbuf, top_buf, ids, ids_next,
            idx_ptr, xidx_ptr, row, lo, hi, tiles_main, T, TX, limit, xlimit, u8, xu8, bf, xbf, f32, xf32, n_tok,
            x_n_tok, pw_main, pw_extra, PAGE, LAYOUT, BLOCK_T, RING)
    inv = gl.where(l > 0, 1.0 / l, 0.0)
    lse2 = gl.where(l > 0, m + gl.log2(l), float("-inf"))
    o, o_r = _output(acc0, acc1, acc_r, ref, ref_r, inv)
    _store_result(o, o_r, lse2, heads, hmask, qrows, b, row, split, S_q, H, sink_ptr, out_ptr, lse_ptr, part_o_ptr,
                  part_lse_ptr, ticket_ptr, LAYOUT, NUM_SPLITS, HAS_SINK, LONELY_POS, FUSED)
