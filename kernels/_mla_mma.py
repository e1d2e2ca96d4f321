"""Tensor-core path of the sparse MLA decode (config ``PATH="mma"``): Gluon, NVIDIA sm_89+ only (its fp8
conversion, ``cvt.rn.f16x2.e4m3x2``).

The Triton kernel (``_mla_kernels.py``) runs 2D ``tl.dot``s with the heads as M: every warp then holds all of
q (144 registers for 576 dims) and the dequantized K tile goes through shared memory twice. Here the four
warps split the *dimensions* instead: warp ``w`` owns K/V bytes ``128 w .. 128 w + 127`` of the 512 fp8
values (v32: exactly scale group ``w``; v4: groups ``2 w`` and ``2 w + 1``, group 7 being zero) and rope
dims ``16 w .. 16 w + 15``. Every tensor has a leading warp axis of 4 and the MMAs are batched over it
(``mma.sync.m16n8k16``, 16 head rows):

- QK: partial scores ``s_w = q_w . K_w^T`` per warp, straight from the loaded bytes: ``cvt.rn.f16x2.e4m3x2``
  makes the MMA's B fragment in place (exact; q enters as fp16 scaled per head row by a power of two so it
  cannot overflow, the factor is taken back in fp32). The scale multiplies the fp32 partial score (one per
  token and group), so K is never rounded; the rope dims (bf16) are a bf16 MMA on the same accumulator.
  The partial scores are summed over the warps through shared memory (one barrier; ``_exchange``), which
  also tells every warp the tile's largest scale.
- softmax in exp2 space on the [16, BLOCK_T] scores, which every warp holds.
- PV: ``acc_w += A_w . V_w`` with V_w the same fp16 values transposed in registers (``movmatrix``) and
  ``A_w = fp16(p * scale / ref)`` per token of the warp's group. ``acc`` holds the sums in units of ``ref``
  (per head, the same in every warp): the softmax's rescale multiplies ``ref``, not ``acc``, and ``ref`` is
  raised (one pass over ``acc``) only when the tile's largest scale exceeds ``REBASE`` times it, so fp16
  never overflows. v4's rope output columns 448-511 are ``bf16(p / ref_r) . rope`` the same way.
- q stays in registers at BLOCK_T 16 (1.1x faster at B = 256 than reading it back from shared memory per
  tile); at BLOCK_T 32 it is stored once in shared memory and read back per tile (``ldmatrix``), which saves
  its 36 registers. The next tile's bytes are loaded while one computes and the ids two tiles ahead.

The K order of every MMA is permuted (a sum does not care): lane ``c`` of a token's 4 lanes loads bytes
``16 c .. 16 c + 15`` and ``64 + 16 c ..`` of its warp's 128, and memory byte ``16 c + 4 j + 2 f + e + 64 hh``
is logical k ``e + 2 c + 8 f + 16 j`` of half ``hh`` (q is loaded in the same order), which is exactly
the B fragment of ``m16n8k16``; the output columns are put back in memory order once, at the end.

Numerics: q (after its power-of-two row factor) and the fp8 values are exact in fp16; products and sums
are fp32. The roundings are the PV weights' fp16(p * scale / ref) (relative 2^-11, or absolute 2^-25 of
``ref`` where a weight is below 2^-14 of it; ``ref`` never exceeds the largest scale read, so against the
row's largest weight that is within bf16's 2^-9 unless the row's scales span more than 2^16) and bf16 for
v4's rope columns; ``1 / ref`` follows ``ref`` by a multiply per tile (a few ulp each, set exactly at a
rebase), far below those. Measured (BENCHMARKS.md, thirteenth session): 1.8-2.3x the Triton path at B >= 64 and
1.1-1.3x at B = 1-8; the tuner picks per shape. The step loop is latency-bound (2 programs per SM, limited
by registers), so its time follows its instruction count: token rows are addressed in 32-bit words, each
token's scales are loaded once, the score exchange moves 16 bytes per thread, and no step divides.
One query row, 16 heads and one split of the positions per program (as the Triton path); the combine
kernel is the Triton path's.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

from aotune.kernels._mla_kernels import row_limits, split_range
from aotune.kernels._pdl import gl_gdc_launch_dependents

HP = gl.constexpr(16)  # head rows per program (one MMA M tile)


@gluon.constexpr_function
def _mma3():
    return gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1, 1], instr_shape=[1, 16, 8])


@gluon.constexpr_function
def _raw_layout(bt):
    """[4, BT, 32] int32 words of each token's fp8 bytes: warp w holds words 32w .. 32w+31; lane c of a
    token's 4 lanes words 4c .. 4c+3 and 16+4c .. 16+4c+3 (two 16-byte loads); lane // 4 the tokens."""
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 1], [0, 0, 2], [0, 0, 16]] + [[0, 8 << i, 0] for i in range((bt // 8).bit_length() - 1)],
        lane_bases=[[0, 0, 4], [0, 0, 8], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
        warp_bases=[[1, 0, 0], [2, 0, 0]], block_bases=[], shape=[4, bt, 32])


@gluon.constexpr_function
def _rope_layout(bt):
    """[4, BT, 16] bf16 rope dims: warp w dims 16w .. 16w+15, lane c dims 4c .. 4c+3 (one 8-byte load)."""
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 1], [0, 0, 2]] + [[0, 8 << i, 0] for i in range((bt // 8).bit_length() - 1)],
        lane_bases=[[0, 0, 4], [0, 0, 8], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
        warp_bases=[[1, 0, 0], [2, 0, 0]], block_bases=[], shape=[4, bt, 16])


@gluon.constexpr_function
def _q_layout(K):
    """[4, 16, K] q in memory order (K = 64: a half, 16: the rope dims), laid out so that relabelling it to
    the permuted K order (``_q_operand``) gives exactly the MMA's A-operand registers: each thread holds one
    run of 16 (rope: 4) adjacent dims of a row, so the loads are 16 bytes wide and no data moves."""
    runs = [[0, 0, 1 << i] for i in range((K // 4 if K == 64 else 4).bit_length() - 1)]
    return gl.DistributedLinearLayout(
        reg_bases=runs + [[0, 8, 0]], lane_bases=[[0, 0, K // 4], [0, 0, K // 2], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
        warp_bases=[[1, 0, 0], [2, 0, 0]], block_bases=[], shape=[4, HP, K])


@gluon.constexpr_function
def _sum_layout(bt):
    """[4, 16, BT] partial scores as stored (``_exchange``: token t = e + 2c + 8j at column e + 2j + BT/4 c)
    with the warp axis in registers: every warp holds all four warps' values at the positions the MMA
    accumulator gives it, 4 adjacent columns (16 bytes) per row and warp."""
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 0, 1], [0, 8, 0]] + [[0, 0, 2 << i] for i in range((bt // 8).bit_length() - 1)]
        + [[1, 0, 0], [2, 0, 0]],
        lane_bases=[[0, 0, bt // 4], [0, 0, bt // 2], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
        warp_bases=[[0, 0, 0], [0, 0, 0]], block_bases=[], shape=[4, 16, bt])


@gluon.constexpr_function
def _top_layout():
    """[4] values, one per warp, all four in every thread's registers."""
    return gl.DistributedLinearLayout(reg_bases=[[1], [2]], lane_bases=[[0]] * 5, warp_bases=[[0], [0]],
                                      block_bases=[], shape=[4])


@gluon.jit
def _exchange(part, top, buf, top_buf, BT: gl.constexpr):
    """Sum of the warps' partial scores [4, 16, BT] -> [16, BT] held by every warp, and the largest of the
    warps' ``top`` [4] (the largest scale each warp read in the tile): one store of each warp's values, one
    barrier, one load of all four (Triton's generic cross-warp reductions took three barriers and two
    shuffle trees for the sum, and two barriers more for a test over the warps). The columns are stored
    in the order e + 2j + BT/4 c of token e + 2c + 8j (a relabelling), so that the values a thread holds sit
    side by side: 16-byte stores and loads."""
    buf.store(part.reshape((4, HP, BT // 8, 4, 2)).permute((0, 1, 3, 2, 4)).reshape((4, HP, BT)))
    top_buf.store(top)
    stored = buf.load(_sum_layout(BT))
    total = gl.sum(stored.reshape((4, HP, 4, BT // 8, 2)).permute((0, 1, 3, 2, 4)).reshape((4, HP, BT)), axis=0)
    return (gl.convert_layout(total, gl.SliceLayout(0, _mma3()), assert_trivial=True),
            gl.max(top_buf.load(_top_layout()), axis=0))


@gluon.jit
def _fp8x4_f16(w):
    """int32 words of 4 fp8 e4m3 bytes -> 4 fp16 (exact), byte 0 first."""
    return gl.inline_asm_elementwise(
        "{ .reg .b16 lo, hi; .reg .b32 a, b; mov.b32 {lo, hi}, $4; cvt.rn.f16x2.e4m3x2 a, lo; "
        "cvt.rn.f16x2.e4m3x2 b, hi; mov.b32 {$0, $1}, a; mov.b32 {$2, $3}, b; }",
        "=h,=h,=h,=h,r", [w], dtype=(gl.float16, gl.float16, gl.float16, gl.float16), is_pure=True, pack=1)


@gluon.jit
def _k_operands(raw, BT: gl.constexpr):
    """Raw words [4, BT, 32] -> the two halves' QK B operands [4, 64 (k), BT] fp16 in the permuted K order."""
    b0, b1, b2, b3 = _fp8x4_f16(raw)
    x = gl.join(gl.join(b0, b2), gl.join(b1, b3))  # [4, BT, 32 words, 2 (pair f), 2 (elem e)]: memory order
    # word = 16 hh + 4 c + j -> [w, t, hh, c, j, f, e]; logical k = e + 2c + 8f + 16j -> [w, j, f, c, e, t, hh]
    x = x.reshape((4, BT, 2, 4, 4, 2, 2)).permute((0, 4, 5, 3, 6, 1, 2)).reshape((4, 64, BT, 2))
    k0, k1 = gl.split(x)
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=_mma3(), k_width=2)
    return gl.convert_layout(k0, b_op, assert_trivial=True), gl.convert_layout(k1, b_op, assert_trivial=True)


@gluon.jit
def _rope_operand(rope, BT: gl.constexpr):
    """Rope [4, BT, 16] bf16 -> the QK B operand [4, 16 (k), BT]: memory dim 4c + 2f + e is k e + 2c + 8f."""
    x = rope.reshape((4, BT, 4, 2, 2)).permute((0, 3, 2, 4, 1)).reshape((4, 16, BT))
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=_mma3(), k_width=2)
    return gl.convert_layout(x, b_op, assert_trivial=True)


@gluon.jit
def _v_operand(k_op, BT: gl.constexpr, K: gl.constexpr):
    """A QK B operand [4, K, BT] -> the PV B operand [4, BT, K], in registers: each 32-bit register of a B
    fragment is one 8x8 block (lane l: row l // 4 = token, columns 2 (l % 4) + e = dims), and
    ``movmatrix.trans`` transposes it across the warp, so that afterwards the element labelled (k = 8 kb + i,
    n = 8 tb + j) holds token 8 tb + i, dim 8 kb + j: swapping i and j in the labels is a relabelling. (Through
    shared memory, ``stmatrix`` / ``ldmatrix.trans``, it took three CTA barriers per step and was 1.1-1.2x
    slower at B >= 64: BENCHMARKS.md, tenth session.)"""
    x = gl.inline_asm_elementwise("movmatrix.sync.aligned.m8n8.trans.b16 $0, $1;", "=r,r", [k_op],
                                  dtype=k_op.dtype, is_pure=True, pack=2)
    x = x.reshape((4, K // 8, 8, BT // 8, 8)).permute((0, 3, 2, 1, 4)).reshape((4, BT, K))
    return gl.convert_layout(x, gl.DotOperandLayout(operand_index=1, parent=_mma3(), k_width=2), assert_trivial=True)


@gluon.jit
def _unpermute(acc, N: gl.constexpr):
    """[4, 16, 64] (half) or [4, 16, 16] (rope) in logical k order -> memory order of the warp's dims."""
    if N == 64:  # logical e + 2c + 8f + 16j -> memory 16c + 4j + 2f + e
        out = acc.reshape((4, 16, 4, 2, 4, 2)).permute((0, 1, 4, 2, 3, 5)).reshape((4, 16, 64))
    else:  # logical e + 2c + 8f -> memory 4c + 2f + e
        out = acc.reshape((4, 16, 2, 4, 2)).permute((0, 1, 3, 2, 4)).reshape((4, 16, 16))
    return out


@gluon.jit
def _scaled_q(q_ptr, rows, hmask, LAYOUT: gl.constexpr, QL: gl.constexpr, RL: gl.constexpr, UP_L: gl.constexpr):
    """q of a program's head rows (``rows``: row * H + head, int64; ``hmask``: which exist) in memory order:
    the two halves [4, R, 64] in layout QL and the rope dims [4, R, 16] in RL (warp w: dims 128 w .. and
    16 w ..), fp32, each row times the power of two 2^-e that puts its largest |q| in [2^14, 2^15) (bf16
    values are then exact fp16 down to 2^-28 of it), and the factors' inverse 2^e [R] in layout UP_L. Shared
    by both mma kernels (``_mla_mma8``)."""
    D_QK: gl.constexpr = 576 if LAYOUT == 0 else 512
    NOPE: gl.constexpr = 512 if LAYOUT == 0 else 448
    w = gl.arange(0, 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, QL)))[:, None, None]
    d = 128 * w + gl.arange(0, 64, layout=gl.SliceLayout(0, gl.SliceLayout(1, QL)))[None, None, :]
    base = q_ptr + gl.convert_layout(rows, gl.SliceLayout(0, gl.SliceLayout(2, QL)))[None, :, None] * D_QK
    rmask = gl.convert_layout(hmask, gl.SliceLayout(0, gl.SliceLayout(2, QL)))[None, :, None]
    q0 = gl.load(base + d, mask=rmask & (d < NOPE), other=0.0).to(gl.float32)
    q1 = gl.load(base + d + 64, mask=rmask & (d + 64 < NOPE), other=0.0).to(gl.float32)
    wr = gl.arange(0, 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, RL)))[:, None, None]
    dr = 16 * wr + gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, RL)))[None, None, :]
    base_r = q_ptr + gl.convert_layout(rows, gl.SliceLayout(0, gl.SliceLayout(2, RL)))[None, :, None] * D_QK
    rmask_r = gl.convert_layout(hmask, gl.SliceLayout(0, gl.SliceLayout(2, RL)))[None, :, None]
    qr = gl.load(base_r + NOPE + dr, mask=rmask_r, other=0.0).to(gl.float32)
    big_r = gl.max(gl.max(gl.abs(qr), axis=2), axis=0)
    big = gl.maximum(gl.max(gl.max(gl.maximum(gl.abs(q0), gl.abs(q1)), axis=2), axis=0),
                     gl.convert_layout(big_r, gl.SliceLayout(0, gl.SliceLayout(2, QL))))  # [R]
    e = gl.maximum(((big.to(gl.int32, bitcast=True) >> 23) & 0xFF) - 127 - 14, -126)  # 2^-e max|q| in [2^14, 2^15)
    down = ((127 - e) << 23).to(gl.float32, bitcast=True)
    down_r = gl.convert_layout(down, gl.SliceLayout(0, gl.SliceLayout(2, RL)))[None, :, None]
    down = down[None, :, None]
    up = gl.convert_layout(((127 + e) << 23).to(gl.float32, bitcast=True), UP_L)
    return q0 * down, q1 * down, qr * down_r, up


@gluon.jit
def _load_q(q_ptr, rows, hmask, LAYOUT: gl.constexpr):
    """q of the program's 16 head rows as fp16 A operands (two halves [4, 16, 64] in the permuted K order),
    scaled per row by a power of two (``_scaled_q``), the rope A operand [4, 16, 16] bf16 (same factor) and
    the factors' inverse [16] (score layout)."""
    rows_l: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(0, _mma3()))
    q0, q1, qr, up = _scaled_q(q_ptr, rows, hmask, LAYOUT, _q_layout(64), _q_layout(16), rows_l)
    return (_q_operand(q0.to(gl.float16), 64), _q_operand(q1.to(gl.float16), 64), _q_operand(qr.to(gl.bfloat16), 16),
            up)


@gluon.jit
def _q_operand(q, K: gl.constexpr):
    """q [4, 16, K] in memory order (``_q_layout``) -> the A operand in the permuted K order (a relabelling):
    K = 64: memory 16c + 4j + 2f + e is k e + 2c + 8f + 16j; K = 16: memory 4c + 2f + e is k e + 2c + 8f."""
    if K == 64:
        x = q.reshape((4, HP, 4, 4, 2, 2)).permute((0, 1, 3, 4, 2, 5)).reshape((4, HP, 64))
    else:
        x = q.reshape((4, HP, 4, 2, 2)).permute((0, 1, 3, 2, 4)).reshape((4, HP, 16))
    return gl.convert_layout(x, gl.DotOperandLayout(operand_index=0, parent=_mma3(), k_width=2), assert_trivial=True)


@gluon.jit
def _tile_ids(idx_ptr, xidx_ptr, row, tile, hi, tiles_main, T, TX, limit, xlimit, BT: gl.constexpr,
              layout: gl.constexpr, EARLY: gl.constexpr = False):
    """Token ids [BT] (in ``layout``) of tile ``tile``: main cache below ``tiles_main``, then the extra cache;
    -1 where masked by the lengths or past this split's ``hi`` (such a tile reads no memory). With EARLY the
    load does not wait for the lengths (``limit`` / ``xlimit`` mask its result instead), so that the first
    tiles' ids, the lengths and q are in flight together."""
    main = tile < tiles_main
    offs = gl.where(main, tile, tile - tiles_main) * BT + gl.arange(0, BT, layout=layout)
    ptr = gl.where(main, idx_ptr + row.to(gl.int64) * T, xidx_ptr + row.to(gl.int64) * TX)
    if EARLY:
        ids = gl.load(ptr + offs, mask=offs < gl.where(tile < hi, gl.where(main, T, TX), 0), other=-1)
        return gl.where(offs < gl.where(main, limit, xlimit), ids, -1)
    return gl.load(ptr + offs, mask=offs < gl.where(tile < hi, gl.where(main, limit, xlimit), 0), other=-1)


@gluon.jit
def _token_words(ids, n_tok, page_words, PAGE: gl.constexpr, LAYOUT: gl.constexpr):
    """Offsets in 4-byte words of the tokens' rows (v4: and of their 8 scale bytes) and their validity (an
    invalid id reads token 0's row, which is never used). One unsigned compare checks both ends (a negative
    id wraps past ``n_tok``) and the page offset is one 32 x 32 -> 64-bit multiply by ``page_words``
    (uint64, the page stride in words); the rest is 32-bit."""
    valid = ids.to(gl.uint32) < n_tok.to(gl.uint32)
    t = gl.where(valid, ids, 0).to(gl.uint32)
    page = (t // PAGE).to(gl.uint64) * page_words
    off = t % PAGE
    if LAYOUT == 0:
        row = (page + off * 164).to(gl.int64)
        return row, row, valid
    return (page + off * 144).to(gl.int64), (page + (PAGE * 144 + off * 2)).to(gl.int64), valid


@gluon.jit
def _gather(ids, u8, bf, f32, n_tok, page_words, PAGE: gl.constexpr, LAYOUT: gl.constexpr, BT: gl.constexpr,
            raw_slot=None, rope_slot=None, ASYNC: gl.constexpr = False):
    """One tile's raw fp8 words [4, BT, 32], rope [4, BT, 16] bf16 and the two halves' scales [4, BT] fp32,
    all in the layout of the loads (``_raw_layout``; ``_attend`` moves the scales to the score layout), from
    token ids [BT] in that layout. An invalid token's scales are -1 (``_attend`` masks its scores by that).
    With ASYNC (``_mla_mma8``'s ring) the words and the rope go to the shared-memory slots ``raw_slot`` /
    ``rope_slot`` instead (cp.async, zeros where masked, one commit group), each thread copying what it will
    read back in the same layout, and only the scales come back (``raw`` and ``rope`` are 0)."""
    raw_l: gl.constexpr = _raw_layout(BT)
    rope_l: gl.constexpr = _rope_layout(BT)
    sc_l: gl.constexpr = gl.SliceLayout(2, raw_l)
    base, sbase, valid = _token_words(ids, n_tok, page_words, PAGE, LAYOUT)
    w = gl.arange(0, 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, raw_l)))[:, None, None]
    word = 32 * w + gl.arange(0, 32, layout=gl.SliceLayout(0, gl.SliceLayout(1, raw_l)))[None, None, :]
    kmask = valid[None, :, None]
    if LAYOUT == 1:
        kmask = kmask & (word < 112)  # words 112-127 hold rope bytes: v4's eighth group is 0
    words = u8.to(gl.pointer_type(gl.int32), bitcast=True)
    if ASYNC:
        async_copy.async_copy_global_to_shared(raw_slot, words + base[None, :, None] + word, mask=kmask)
        raw = 0
    else:
        raw = gl.load(words + base[None, :, None] + word, mask=kmask, other=0)
    base_r = gl.convert_layout(base, gl.SliceLayout(0, gl.SliceLayout(2, rope_l)), assert_trivial=True)
    valid_r = gl.convert_layout(valid, gl.SliceLayout(0, gl.SliceLayout(2, rope_l)), assert_trivial=True)
    wr = gl.arange(0, 4, layout=gl.SliceLayout(1, gl.SliceLayout(2, rope_l)))[:, None, None]
    dr = 16 * wr + gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(1, rope_l)))[None, None, :]
    ROPE: gl.constexpr = 264 if LAYOUT == 0 else 224  # bf16 elements into the token's row
    if ASYNC:
        async_copy.async_copy_global_to_shared(rope_slot, bf + (base_r * 2 + ROPE)[None, :, None] + dr,
                                               mask=valid_r[None, :, None])
        async_copy.commit_group()
        rope = 0.0
    else:
        rope = gl.load(bf + (base_r * 2 + ROPE)[None, :, None] + dr, mask=valid_r[None, :, None], other=0.0)
    ws = gl.arange(0, 4, layout=gl.SliceLayout(1, sc_l))[:, None]
    smask = valid[None, :]
    if LAYOUT == 0:
        sc0 = gl.load(f32 + (sbase + 128)[None, :] + ws, mask=smask, other=-1.0)
        sc1 = sc0
    else:
        e0 = gl.load(u8 + (sbase * 4)[None, :] + 2 * ws, mask=smask, other=0).to(gl.int32)
        e1 = gl.load(u8 + (sbase * 4)[None, :] + 2 * ws + 1, mask=smask & (ws < 3), other=0).to(gl.int32)
        sc0 = gl.where(smask, (e0 << 23).to(gl.float32, bitcast=True), -1.0)  # UE8M0 2^(e - 127), exact
        sc1 = (e1 << 23).to(gl.float32, bitcast=True)
    return raw, rope, sc0, sc1


@gluon.jit
def _gather_tile(ids, tile, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok, x_n_tok, pw_main, pw_extra,
                 PAGE: gl.constexpr, LAYOUT: gl.constexpr, BT: gl.constexpr, raw_slot=None, rope_slot=None,
                 ASYNC: gl.constexpr = False):
    """``_gather`` from the cache that tile ``tile`` belongs to (the main one below ``tiles_main``, else the extra
    one). Shared by both mma kernels."""
    main = tile < tiles_main
    return _gather(ids, gl.where(main, u8, xu8), gl.where(main, bf, xbf), gl.where(main, f32, xf32),
                   gl.where(main, n_tok, x_n_tok), gl.where(main, pw_main, pw_extra), PAGE, LAYOUT, BT, raw_slot,
                   rope_slot, ASYNC)


@gluon.jit
def _split_start(idx_ptr, xidx_ptr, len_ptr, xlen_ptr, row, split, b, T, TX, BT: gl.constexpr,
                 NUM_SPLITS: gl.constexpr, HAS_LEN: gl.constexpr, HAS_XLEN: gl.constexpr, ids_l: gl.constexpr):
    """A program's positions: (tiles of the main cache, first tile, end tile, the two caches' limits) and the
    ids of its first two tiles, loaded without waiting for the lengths (``_tile_ids`` EARLY) so that they,
    the lengths and q are in flight together. Shared by both mma kernels."""
    tiles_main, lo, hi = split_range(split, T, TX, BT, NUM_SPLITS)
    limit, xlimit = row_limits(len_ptr, xlen_ptr, b, T, TX, HAS_LEN, HAS_XLEN)
    ids = _tile_ids(idx_ptr, xidx_ptr, row, lo, hi, tiles_main, T, TX, limit, xlimit, BT, ids_l, True)
    ids_next = _tile_ids(idx_ptr, xidx_ptr, row, lo + 1, hi, tiles_main, T, TX, limit, xlimit, BT, ids_l, True)
    return tiles_main, lo, hi, limit, xlimit, ids, ids_next


# PV weights are stored relative to a reference per head (``acc`` is in units of it), the same in every warp:
# at most REBASE times it, so fp16 never overflows. The reference follows the softmax's max (times alpha, no
# pass over ``acc``) and is raised, with one pass over ``acc``, only when the tile's largest scale (a bound
# on every weight, p <= 1) exceeds REBASE times it: every warp knows that scale after the score exchange,
# so the test needs no communication of its own.
REBASE = gl.constexpr(32768.0)


@gluon.jit
def _rebase(acc, ref, new, HEADS_N: gl.constexpr):
    """``acc`` from units of ``ref`` to units of ``new`` (>= ref), per head: [4, 16, N] (heads on axis 1) or,
    with HEADS_N (``_mla_mma8``: the heads as the MMA's N), [4, N, 8]."""
    factor = gl.where(new > 0, gl.fdiv(ref, new), 1.0)  # approximate: 2 ulp
    if HEADS_N:
        out = acc * factor[None, :][None, :, :]
    else:
        out = acc * factor[:, None][None, :, :]
    return out


@gluon.jit
def _follow(inv, grow_by, ref):
    """The inverse of a reference that was just multiplied by ``1 / grow_by``: 0 while the reference is 0 and
    at most fp32's largest finite value (so that a weight of 0 times it stays 0). Each step rounds it by a
    few ulp more than a division would; the rebase (``_attend``) sets it exactly."""
    return gl.where(ref > 0, gl.minimum(inv * grow_by, 3.4028234663852886e38), 0.0)


@gluon.jit
def _online_step(s, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, top_scale, LAYOUT: gl.constexpr,
                 HEADS_N: gl.constexpr):
    """The online softmax over a tile's summed scores ``s`` (exp2 space; [16 heads, BT], or [BT, 8 heads] with
    HEADS_N): the new max per head, the weights ``p = exp2(s * qk_scale - m_new)``, and the state after the
    tile: ``l``, the references and their inverses follow the max (``_follow``: no division), and where the
    tile's largest scale ``top_scale`` exceeds REBASE times the reference (rare: the first tile) the
    accumulators are rebased in one pass (``_rebase``). Shared by both mma kernels."""
    if HEADS_N:
        m_new = gl.maximum(m, gl.max(s, axis=0) * qk_scale)  # the max commutes with a positive factor
    else:
        m_new = gl.maximum(m, gl.max(s, axis=1) * qk_scale)
    alpha = gl.exp2(m - m_new)
    grow_by = gl.exp2(m_new - m)  # 1 / alpha: the inverses follow without a division
    if HEADS_N:
        p = gl.exp2(gl.fma(s, qk_scale[None, :], -m_new[None, :]))
        l = l * alpha + gl.sum(p, axis=0)
    else:
        p = gl.exp2(gl.fma(s, qk_scale[:, None], -m_new[:, None]))
        l = l * alpha + gl.sum(p, axis=1)
    ref = ref * alpha
    ref_r = ref_r * alpha
    inv_ref = _follow(inv_ref, grow_by, ref)
    if LAYOUT == 1:  # v4's rope weights alone use it
        inv_r = _follow(inv_r, grow_by, ref_r)
    grow = top_scale > ref * REBASE  # the weights p * scale are at most top_scale (p <= 1)
    if LAYOUT == 1:
        grow = grow | (ref_r * REBASE < 1.0)  # the rope weights are p alone
    if gl.max(grow.to(gl.int32), axis=0) > 0:  # rare (the first tile): one pass over acc
        new = gl.maximum(ref, top_scale)
        acc0 = _rebase(acc0, ref, new, HEADS_N)
        acc1 = _rebase(acc1, ref, new, HEADS_N)
        ref = new
        inv_ref = gl.where(ref > 0, gl.fdiv(1.0, ref), 0.0)
        if LAYOUT == 1:
            new_r = gl.maximum(ref_r, 1.0)
            acc_r = _rebase(acc_r, ref_r, new_r, HEADS_N)
            ref_r = new_r
            inv_r = gl.fdiv(1.0, ref_r)
    return m_new, p, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r


@gluon.jit
def _weights(w, inv_ref, A_OP: gl.constexpr, dtype: gl.constexpr):
    """PV weights times their reference's inverse [16], as the MMA's A operand."""
    return gl.convert_layout((w * inv_ref[:, None][None, :, :]).to(dtype), A_OP)


@gluon.jit
def _q_op(q, A_OP: gl.constexpr, Q_REGS: gl.constexpr):
    """q's A operand: ``q`` itself (registers) or read from the shared-memory copy ``q``."""
    if Q_REGS:
        out = q
    else:
        out = q.load(A_OP)
    return out


@gluon.jit
def _attend(qs0, qs1, qsr, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, raw, rope, sc0, sc1,
            sbuf, top_buf, LAYOUT: gl.constexpr, BT: gl.constexpr, Q_REGS: gl.constexpr):
    """One online-softmax step over a tile (exp2 space). ``acc0``/``acc1`` hold the output sums in units of
    ``ref`` [16], v4's ``acc_r`` in units of ``ref_r`` (see REBASE); ``inv_ref`` / ``inv_r`` are their
    inverses. ``sc0`` / ``sc1`` come in the load layout (``_gather``; -1 marks an invalid token)."""
    mma: gl.constexpr = _mma3()
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    sc_l: gl.constexpr = gl.SliceLayout(1, mma)
    sc0 = gl.convert_layout(sc0, sc_l)  # within the warp: shuffles
    if LAYOUT == 0:
        sc1 = sc0
    else:
        sc1 = gl.convert_layout(sc1, sc_l)
    k0, k1 = _k_operands(raw, BT)
    r_op = _rope_operand(rope, BT)
    zero = gl.zeros((4, HP, BT), gl.float32, layout=mma)
    # an invalid token's partial score is -inf in every warp (the bias), so its sum is -inf (a valid one's is
    # finite), and so is its score: qk_scale > 0 (sm_scale is checked positive)
    bias = gl.where(sc0 >= 0, 0.0, float("-inf"))[:, None, :]
    if LAYOUT == 0:  # one scale group per warp
        part = mma_v2(_q_op(qs1, a_op, Q_REGS), k1, mma_v2(_q_op(qs0, a_op, Q_REGS), k0, zero)) * sc0[:, None, :] + bias
    else:
        part = (mma_v2(_q_op(qs0, a_op, Q_REGS), k0, zero) * sc0[:, None, :] + bias
                + mma_v2(_q_op(qs1, a_op, Q_REGS), k1, zero) * sc1[:, None, :])
    part = mma_v2(_q_op(qsr, a_op, Q_REGS), r_op, part)
    if LAYOUT == 0:
        top = gl.max(sc0, axis=1)
    else:
        top = gl.max(gl.maximum(sc0, sc1), axis=1)
    s, top_scale = _exchange(part, top, sbuf, top_buf, BT)  # [16, BT]: the warps' partial scores, summed
    m_new, p, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r = _online_step(
        s, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, top_scale, LAYOUT, False)
    p3 = p[None, :, :]
    acc0 = mma_v2(_weights(p3 * sc0[:, None, :], inv_ref, a_op, gl.float16), _v_operand(k0, BT, 64), acc0)
    acc1 = mma_v2(_weights(p3 * sc1[:, None, :], inv_ref, a_op, gl.float16), _v_operand(k1, BT, 64), acc1)
    if LAYOUT == 1:  # the rope values are output columns 448-511
        acc_r = mma_v2(_weights(gl.broadcast(p3, zero)[0], inv_r, a_op, gl.bfloat16), _v_operand(r_op, BT, 16), acc_r)
    return m_new, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r


@gluon.constexpr_function
def _store_layout():
    return gl.BlockedLayout([1, 4], [1, 32], [4, 1], [1, 0])


@gluon.jit
def _output(acc0, acc1, acc_r, ref, ref_r, inv):
    """Normalized output [16, 512] and v4's rope columns [16, 64] in memory order (store layout)."""
    unit = (inv * ref)[:, None][None, :, :]
    o0 = _unpermute(acc0 * unit, 64)
    o1 = _unpermute(acc1 * unit, 64)
    o = gl.join(o0, o1).permute((1, 0, 3, 2)).reshape((HP, 512))  # column 128 w + 64 hh + m
    o_r = _unpermute(acc_r * (inv * ref_r)[:, None][None, :, :], 16).permute((1, 0, 2)).reshape((HP, 64))  # column 448 + 16 w + dd
    st: gl.constexpr = _store_layout()
    return gl.convert_layout(o, st), gl.convert_layout(o_r, st)


@gluon.jit
def _store_rows(ptr, o, o_r, rows, hmask, LAYOUT: gl.constexpr):
    """Store [16, 512] (v4: its first 448 columns, then the rope part at column 448) as rows of 512."""
    st: gl.constexpr = _store_layout()
    rows = gl.convert_layout(rows, gl.SliceLayout(1, st))[:, None]
    hm = gl.convert_layout(hmask, gl.SliceLayout(1, st))[:, None]
    cols = gl.arange(0, 512, layout=gl.SliceLayout(0, st))[None, :]
    if LAYOUT == 0:
        gl.store(ptr + rows * 512 + cols, o.to(ptr.dtype.element_ty), mask=hm)
    else:
        gl.store(ptr + rows * 512 + cols, o.to(ptr.dtype.element_ty), mask=hm & (cols < 448))
        cr = gl.arange(0, 64, layout=gl.SliceLayout(0, st))[None, :]
        gl.store(ptr + rows * 512 + 448 + cr, o_r.to(ptr.dtype.element_ty), mask=hm)


@gluon.jit
def _store_result(o, o_r, lse2, heads, hmask, qrows, b, row, split, S_q, H, sink_ptr, out_ptr, lse_ptr, part_o_ptr,
                  part_lse_ptr, ticket_ptr, LAYOUT: gl.constexpr, NUM_SPLITS: gl.constexpr, HAS_SINK: gl.constexpr,
                  LONELY_POS: gl.constexpr, FUSED: gl.constexpr):
    """A program's normalized output rows ``o`` / ``o_r`` (store layout) and its log2 lse per head ``lse2``
    (-inf for a lonely row): with one split the final out (times the sink's factor) and lse, else the fp32
    partial and ``lse2`` for the combine; with ``FUSED`` (config COMBINE "fused") the last split of the row and
    head tile to finish merges them itself (``_last_split``, ``_merge_splits``). Shared by both mma kernels
    (``_mla_mma8``)."""
    if NUM_SPLITS == 1:
        lse = lse2 * 0.6931471805599453  # ln(2): back to natural-log units
        if HAS_SINK:
            sink = gl.load(sink_ptr + heads, mask=hmask, other=0.0)
            factor = gl.convert_layout(1.0 / (1.0 + gl.exp(sink - lse)), gl.SliceLayout(1, _store_layout()))
            o = o * factor[:, None]
            o_r = o_r * factor[:, None]
        if LONELY_POS:
            lse = gl.where(lse2 == float("-inf"), float("inf"), lse)
        gl.store(lse_ptr + (b * H + heads) * S_q + row % S_q, lse, mask=hmask)
        _store_rows(out_ptr, o, o_r, qrows, hmask, LAYOUT)
    else:
        prow = (row.to(gl.int64) * NUM_SPLITS + split) * H + heads
        gl.store(part_lse_ptr + prow, lse2, mask=hmask)
        _store_rows(part_o_ptr, o, o_r, prow, hmask, LAYOUT)
        if FUSED:
            if _last_split(ticket_ptr, row, NUM_SPLITS):
                _merge_splits(part_o_ptr, part_lse_ptr, sink_ptr, out_ptr, lse_ptr, heads, hmask, b, row, S_q, H,
                              NUM_SPLITS, HAS_SINK, LONELY_POS)


@gluon.jit
def _last_split(ticket_ptr, row, NUM_SPLITS: gl.constexpr):
    """Whether this program is the last of its (row, head tile)'s splits to finish. Every thread's partial
    stores come before the ticket (a CTA barrier, then one thread's gpu-scope acq_rel add: the release is
    cumulative), the last program's loads after it (acquire, then the barrier that hands the old value to
    every thread). That program sets the ticket back to 0, so the tickets are all 0 between calls."""
    slot = row * gl.num_programs(0) + gl.program_id(0)
    gl.thread_barrier()
    last = gl.atomic_add(ticket_ptr + slot, 1, sem="acq_rel", scope="gpu") == NUM_SPLITS - 1
    if last:
        gl.store(ticket_ptr + slot, 0)
    return last


@gluon.jit
def _merge_splits(part_o_ptr, part_lse_ptr, sink_ptr, out_ptr, lse_ptr, heads, hmask, b, row, S_q, H,
                  NUM_SPLITS: gl.constexpr, HAS_SINK: gl.constexpr, LONELY_POS: gl.constexpr):
    """The combine kernel's merge (``_mla_kernels.mla_combine_kernel``: the largest lse, then every split's
    weight against it, in fp32) of this program's heads. The partial rows are loaded ``CHUNK`` splits at a time
    as one [CHUNK, rows, 512] tensor (a thread's CHUNK x rows x 4 floats, 128, all in flight at once) and from
    L2 (``.cg``: other SMs wrote them); each chunk is summed in registers before it is added."""
    ROWS: gl.constexpr = heads.shape[0]
    CHUNK: gl.constexpr = 32 // ROWS
    l3: gl.constexpr = gl.BlockedLayout([CHUNK, 1, 4], [1, 1, 32], [1, 4, 1], [2, 1, 0])
    lse_l: gl.constexpr = gl.SliceLayout(2, l3)  # [CHUNK, rows]
    o_l: gl.constexpr = gl.SliceLayout(0, l3)  # [rows, 512]
    rows_l: gl.constexpr = gl.SliceLayout(0, lse_l)
    heads = gl.convert_layout(heads, rows_l)
    hmask = gl.convert_layout(hmask, rows_l)
    prow = row.to(gl.int64) * NUM_SPLITS * H + heads  # split k of these heads is partial row prow + k * H
    ks = gl.arange(0, CHUNK, layout=gl.SliceLayout(1, lse_l))
    m = gl.full((ROWS,), float("-inf"), gl.float32, layout=rows_l)
    for k0 in range(0, NUM_SPLITS, CHUNK):  # a split without tokens (or past NUM_SPLITS) has lse -inf
        valid = hmask[None, :] & (k0 + ks < NUM_SPLITS)[:, None]
        lse_k = gl.load(part_lse_ptr + prow[None, :] + (k0 + ks)[:, None] * H, mask=valid, other=float("-inf"),
                        cache_modifier=".cg")
        m = gl.maximum(m, gl.max(lse_k, axis=0))
    m_safe = gl.where(m == float("-inf"), 0.0, m)
    cols2 = gl.arange(0, 512, layout=gl.SliceLayout(0, o_l))[None, :]
    cols = cols2[None, :, :]
    total = gl.zeros((ROWS,), gl.float32, layout=rows_l)
    o = gl.zeros((ROWS, 512), gl.float32, layout=o_l)
    for k0 in range(0, NUM_SPLITS, CHUNK):
        valid = hmask[None, :] & (k0 + ks < NUM_SPLITS)[:, None]
        prow_k = prow[None, :] + (k0 + ks)[:, None] * H
        lse_k = gl.load(part_lse_ptr + prow_k, mask=valid, other=float("-inf"), cache_modifier=".cg")
        rows_k = gl.load(part_o_ptr + prow_k[:, :, None] * 512 + cols, mask=valid[:, :, None], other=0.0,
                         cache_modifier=".cg")
        w = gl.exp2(lse_k - m_safe[None, :])  # 0 where masked: exp2(-inf)
        total += gl.sum(w, axis=0)
        o += gl.sum(w[:, :, None] * rows_k, axis=0)
    ok = gl.convert_layout(total > 0, gl.SliceLayout(1, o_l))
    o = o * gl.where(ok, 1.0 / gl.convert_layout(total, gl.SliceLayout(1, o_l)), 0.0)[:, None]
    lse2 = gl.where(total > 0, m_safe + gl.log2(total), float("-inf"))
    lse = lse2 * 0.6931471805599453
    if HAS_SINK:
        factor = 1.0 + gl.exp(gl.load(sink_ptr + heads, mask=hmask, other=0.0) - lse)
        o = o / gl.convert_layout(factor, gl.SliceLayout(1, o_l))[:, None]
    if LONELY_POS:
        lse = gl.where(lse2 == float("-inf"), float("inf"), lse)
    gl.store(lse_ptr + (b * H + heads) * S_q + row % S_q, lse, mask=hmask)
    orow = gl.convert_layout(row.to(gl.int64) * H + heads, gl.SliceLayout(1, o_l))[:, None]
    gl.store(out_ptr + orow * 512 + cols2, o.to(gl.bfloat16),
             mask=gl.convert_layout(hmask, gl.SliceLayout(1, o_l))[:, None])


@gluon.jit
def mla_decode_mma_kernel(
    q_ptr, u8, bf, f32, idx_ptr, len_ptr, n_tok, page_stride, T,
    xu8, xbf, xf32, xidx_ptr, xlen_ptr, x_n_tok, x_page_stride, TX,
    sink_ptr, out_ptr, lse_ptr, part_o_ptr, part_lse_ptr, ticket_ptr, S_q, H, scale_log2,
    LAYOUT: gl.constexpr, PAGE: gl.constexpr, BLOCK_T: gl.constexpr, H_TILE: gl.constexpr,
    NUM_SPLITS: gl.constexpr, HAS_LEN: gl.constexpr, HAS_XLEN: gl.constexpr, HAS_SINK: gl.constexpr,
    LONELY_POS: gl.constexpr, PDL: gl.constexpr = False, FUSED: gl.constexpr = False,
):
    """Partial (or, with NUM_SPLITS == 1, final) attention of one (head tile, row, split); the arguments are
    those of ``_mla_kernels.mla_decode_kernel``. The next tile's bytes are loaded while one computes, and the
    ids two tiles ahead (so no load waits on another inside a step)."""
    if PDL:
        gl_gdc_launch_dependents()
    mma: gl.constexpr = _mma3()
    rows_l: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(0, mma))
    ids_l: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(2, _raw_layout(BLOCK_T)))
    pid_h = gl.program_id(0)
    row = gl.program_id(1)
    split = gl.program_id(2)
    b = row // S_q
    r = gl.arange(0, HP, layout=rows_l)
    heads = pid_h * H_TILE + r
    hmask = (r < H_TILE) & (heads < H)
    qrows = row.to(gl.int64) * H + heads
    tiles_main, lo, hi, limit, xlimit, ids, ids_next = _split_start(
        idx_ptr, xidx_ptr, len_ptr, xlen_ptr, row, split, b, T, TX, BLOCK_T, NUM_SPLITS, HAS_LEN, HAS_XLEN, ids_l)
    qa0, qa1, qra, up = _load_q(q_ptr, qrows, hmask, LAYOUT)
    Q_REGS: gl.constexpr = BLOCK_T == 16  # BLOCK_T 32 has no room for q's 36 registers (it would spill)
    q_sh: gl.constexpr = gl.SwizzledSharedLayout(8, 1, 8, order=[2, 1, 0])
    if Q_REGS:
        qs0 = qa0
        qs1 = qa1
        qsr = qra
    else:
        qs0 = gl.allocate_shared_memory(gl.float16, [4, HP, 64], q_sh, qa0)  # read back per tile
        qs1 = gl.allocate_shared_memory(gl.float16, [4, HP, 64], q_sh, qa1)
        qsr = gl.allocate_shared_memory(gl.bfloat16, [4, HP, 16], q_sh, qra)
    qk_scale = up * scale_log2
    m = gl.full((HP,), -1e30, gl.float32, layout=rows_l)
    l = gl.zeros((HP,), gl.float32, layout=rows_l)
    acc0 = gl.zeros((4, HP, 64), gl.float32, layout=mma)
    acc1 = gl.zeros((4, HP, 64), gl.float32, layout=mma)
    acc_r = gl.zeros((4, HP, 16), gl.float32, layout=mma)
    ref = gl.zeros((HP,), gl.float32, layout=rows_l)  # acc0 and acc1 are in units of ref (see REBASE)
    ref_r = gl.zeros((HP,), gl.float32, layout=rows_l)
    inv_ref = gl.zeros((HP,), gl.float32, layout=rows_l)  # 1 / ref (0 while ref is 0)
    inv_r = gl.zeros((HP,), gl.float32, layout=rows_l)
    sbuf = gl.allocate_shared_memory(gl.float32, [4, HP, BLOCK_T], gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0]))
    top_buf = gl.allocate_shared_memory(gl.float32, [4], gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    pw_main = (page_stride // 4).to(gl.uint32).to(gl.uint64)  # page strides in words (multiples of 4 bytes)
    pw_extra = (x_page_stride // 4).to(gl.uint32).to(gl.uint64)
    raw, rope, sc0, sc1 = _gather_tile(ids, lo, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok, x_n_tok, pw_main,
                                       pw_extra, PAGE, LAYOUT, BLOCK_T)
    ids = ids_next
    for tile in range(lo, hi):
        # the next tile's bytes (ids loaded a tile ago) and the ids of the tile after it, then this tile's math
        raw1, rope1, sc01, sc11 = _gather_tile(ids, tile + 1, tiles_main, u8, xu8, bf, xbf, f32, xf32, n_tok,
                                               x_n_tok, pw_main, pw_extra, PAGE, LAYOUT, BLOCK_T)
        ids = _tile_ids(idx_ptr, xidx_ptr, row, tile + 2, hi, tiles_main, T, TX, limit, xlimit, BLOCK_T, ids_l)
        m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r = _attend(
            qs0, qs1, qsr, qk_scale, m, l, acc0, acc1, acc_r, ref, ref_r, inv_ref, inv_r, raw, rope, sc0, sc1, sbuf,
            top_buf, LAYOUT, BLOCK_T, Q_REGS)
        raw, rope, sc0, sc1 = raw1, rope1, sc01, sc11
    inv = gl.where(l > 0, 1.0 / l, 0.0)
    lse2 = gl.where(l > 0, m + gl.log2(l), float("-inf"))
    o, o_r = _output(acc0, acc1, acc_r, ref, ref_r, inv)
    _store_result(o, o_r, lse2, heads, hmask, qrows, b, row, split, S_q, H, sink_ptr, out_ptr, lse_ptr, part_o_ptr,
                  part_lse_ptr, ticket_ptr, LAYOUT, NUM_SPLITS, HAS_SINK, LONELY_POS, FUSED)
