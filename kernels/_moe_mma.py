"""MMA path of the MXFP4 MoE (config ``PATH="mma"``): decode batches on the tensor cores, GPU only (Gluon).

The gemv path (``_moe_gemv.py``) passes over an expert's weights once per token and is issue-bound (per
weight one fp32 FMA plus about 2.6 decode instructions). Here the weights are the M side of
``mma.sync.m16n8k16`` (bf16 in, fp32 accumulate) and up to 8 tokens of one expert are its N side, so one
pass serves every token routed to the expert. The decoded E2M1 values go from registers straight into the
MMA's A fragment, which Triton's ``tl.dot`` cannot do (it sends such a tile through shared memory);
Gluon's explicit layouts can, and the compiler checks that no data moves (``assert_trivial``).

Layouts, per span of 64 bytes of a weight row (4 scale groups, 128 values of K):
- ``_weight_layout``: lane ``c`` (``lane % 4``) loads bytes ``16c .. 16c+15`` (one 16-byte load: scale
  group ``c`` of the span); ``lane // 4`` and the registers walk the rows exactly as the A fragment does.
  The fragment wants lane ``c`` to hold the K pairs ``2c, 2c+1`` and ``2c+8, 2c+9`` of each 16-wide K
  step, so the kernel feeds the MMA a *permuted* K (a sum over K does not care about its order): memory
  byte ``16c + 4j + i`` becomes logical byte ``c + 4i + 16j`` (reshapes and permutes: no data moves), and
  both nibbles of a byte stay adjacent (the fragment's bf16 pairs).
- ``_act_layout``: the activations (int32 bf16 pairs) get the same permutation; lane ``c`` loads the 32
  values of K of its group (four 16-byte loads) and the same kind of relabelling makes the B fragment.
- ``_scale_layout``: lane ``c`` loads the scale byte of its group, so each lane multiplies its decoded
  bf16 pairs by its own factor (exact: a power of two times an E2M1 value; byte 255 is NaN) and the MMA
  accumulates a whole step in fp32 in place. Only the order of the fp32 sums differs from the reference.
Every load of a warp moves 512 bytes of whole 32-byte sectors. An earlier form (one scale group per
MMA, lanes loading 4 bytes of each group and the per-row scale bytes) was bound by L1 requests at about
2 TB/s (BENCHMARKS.md, sixth session).

E2M1 -> bf16 (``_e2m1x8_bf16``): per 32-bit register (8 values) masks and integer multiplies put each
nibble's bits where a bf16 of the value times 2^-126 has them, and one ``fma.bf16x2`` per output word
multiplies by the scale times 2^(126 - FAST_SHIFT) (the fp32 sums are multiplied by 2^FAST_SHIFT at the
end): 17 SASS instructions per 8 weights (8 LOP3, 1 SHF, 4 IMAD, 4 HFMA2) where the shift decode took 23
(BENCHMARKS.md, seventh and eighth sessions). That factor is exact for scale bytes 0-133 (weights up to
6 * 2^6); a CTA whose tile reads a larger byte redoes its sums on the exact decode (2^126 and the scale in
two ``fma.bf16x2``), so NaN 255 and every other byte work (byte 0 gives the reference's 2^-127 on the
fast decode, 0 on the exact one and the other paths: at most 6 * 2^-127 per weight). Its constants
come from ``_tables``. The loop keeps the next step's raw bytes in registers while one step
computes (a register double buffer); with the config's num_stages > 1 the weights instead stream through
a ring of that many shared-memory tiles (cp.async), which frees about 30 registers. A last partial span
is loaded masked.

Grid and routing as on the gemv path (``_owner_slots``: the first slot of each expert does the work, no
sort, CUDA-graph safe); the owner loops over its tokens 8 at a time. The first GEMM also stores each slot's
match (``_store_route``: how many slots it works for, and which), so the second GEMM reads its slots with
one load per lane instead of redoing the match (a scan over every slot and, at 4 warps, a dozen barriers:
about 130-250 of its 1,100-1,300 instructions per program at DeepSeek-V4-Flash TP 8; 9-11% of the call at
TP 8 M = 32 on the H100, BENCHMARKS.md). The first GEMM's tile is BLOCK_N/2 gate rows then the matching
up rows (the two halves of the accumulator sit in the same threads, so the activation needs no data
exchange) and writes bf16 ``h``, or with SPLIT_K > 1 (a third grid axis over
whole BLOCK_K steps of K: more programs where few experts are active, as at TP 8) the fp32 sums of its K
range, which ``_moe_gemv._moe_act`` adds in split order and activates; the second writes
``(h @ w2.T + b2) * weight`` per slot in fp32 for the reduce, one BLOCK_N row tile per program or, with
TILES > 1 (config DOWN_TILES), that many tiles in one software pipeline (``_down_tiles``). Needs group_size
32, K and I multiples of 32 and BLOCK_K a multiple of 128 (``mxfp4_moe._mma_fits``).
"""
from __future__ import annotations

import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

from aotune.kernels._moe_kernels import _activate, _gate_up_rows
from aotune.kernels._pdl import gl_gdc_launch_dependents, gl_gdc_wait, gl_prefetch_l2

TOKENS = gl.constexpr(8)  # the MMA's N: tokens of one expert per pass over its weights
# The fast decode multiplies by the scale times 2^(126 - FAST_SHIFT) in one step and the fp32 sums by
# 2^FAST_SHIFT after the loop. That factor is a finite bf16 up to scale byte 128 + FAST_SHIFT, and the
# smallest product, 0.5 * 2^(s - 127 - FAST_SHIFT), stays a bf16 (subnormal) down to byte FAST_SHIFT - 5:
# 5 makes every byte 0 .. 133 exact. A tile that reads a larger byte is recomputed on the exact decode.
# (The fp32 sums run 2^-5 small: only true products below about 2^-121 reach fp32's subnormal range.)
FAST_SHIFT = gl.constexpr(5)
FAST_MAX_SCALE = gl.constexpr(128 + FAST_SHIFT.value)


@gluon.constexpr_function
def _mma_layout(warps):
    return gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[warps, 1], instr_shape=[16, 8])


@gluon.constexpr_function
def _weight_layout(warps, rows, spans):
    """[rows, 16 * spans] int32 words of weight bytes, 64 bytes (4 scale groups) per span: lane c holds
    words 4c .. 4c+3 (one 16-byte load, scale group c of the span)."""
    reps = rows // (16 * warps)
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [8, 0]] + [[0, 16 << i] for i in range(spans.bit_length() - 1)]
        + [[16 * warps << i, 0] for i in range(reps.bit_length() - 1)],
        lane_bases=[[0, 4], [0, 8], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[16 << i, 0] for i in range(warps.bit_length() - 1)], block_bases=[], shape=[rows, 16 * spans])


@gluon.constexpr_function
def _scale_layout(warps, rows, spans):
    """[rows, 4 * spans] scale bytes (and one weight word of each lane): lane c holds group c of each span."""
    reps = rows // (16 * warps)
    return gl.DistributedLinearLayout(
        reg_bases=[[8, 0]] + [[0, 4 << i] for i in range(spans.bit_length() - 1)]
        + [[16 * warps << i, 0] for i in range(reps.bit_length() - 1)],
        lane_bases=[[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[16 << i, 0] for i in range(warps.bit_length() - 1)], block_bases=[], shape=[rows, 4 * spans])


@gluon.constexpr_function
def _act_layout(warps, spans):
    """[8 tokens, 64 * spans] int32 bf16 pairs (128 values of K per span): lane c holds pairs 16c .. 16c+15
    (k 32c .. 32c+31, four 16-byte loads) of each span; every warp a copy."""
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [0, 4], [0, 8]] + [[0, 64 << i] for i in range(spans.bit_length() - 1)],
        lane_bases=[[0, 16], [0, 32], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[0, 0]] * (warps.bit_length() - 1), block_bases=[], shape=[TOKENS, 64 * spans])


@gluon.constexpr_function
def _token_layout(warps):
    """[8, T_PAD] slot matching (routing)."""
    return gl.BlockedLayout([1, 1], [1, 32], [1, warps], [1, 0])


@gluon.jit
def _tables(K):
    """The constant words of ``_e2m1x8_bf16`` (2^126 and -0.0 as bf16x2), as values ptxas cannot rebuild from
    immediates, so they stay in registers."""
    z = gl.minimum(K, 0)
    return z + 0x7E807E80, z + -2147450880


_E2M1_BITS = """
        .reg .b32 u, a0, a1, a2, a3;
        shr.u32 u, $4, 8;
        and.b32 a0, $4, 0x000F000F;
        and.b32 a1, $4, 0x00F000F0;
        and.b32 a2, u, 0x000F000F;
        and.b32 a3, u, 0x00F000F0;
        mul.lo.u32 a0, a0, 0x1040;
        mul.lo.u32 a1, a1, 0x104;
        mul.lo.u32 a2, a2, 0x1040;
        mul.lo.u32 a3, a3, 0x104;
        and.b32 a0, a0, 0x81C081C0;
        and.b32 a1, a1, 0x81C081C0;
        and.b32 a2, a2, 0x81C081C0;
        and.b32 a3, a3, 0x81C081C0;
"""
_TIMES_2_126 = """
        fma.rn.bf16x2 a0, a0, $6, $7;
        fma.rn.bf16x2 a1, a1, $6, $7;
        fma.rn.bf16x2 a2, a2, $6, $7;
        fma.rn.bf16x2 a3, a3, $6, $7;
"""
_TIMES_SCALE = """
        fma.rn.bf16x2 $0, a0, $5, $7;
        fma.rn.bf16x2 $1, a1, $5, $7;
        fma.rn.bf16x2 $2, a2, $5, $7;
        fma.rn.bf16x2 $3, a3, $5, $7;
"""
_DECODE_FAST = gl.constexpr("{" + _E2M1_BITS + _TIMES_SCALE + "}")
_DECODE_EXACT = gl.constexpr("{" + _E2M1_BITS + _TIMES_2_126 + _TIMES_SCALE + "}")


@gluon.jit
def _e2m1x8_bf16(word, mult2, c126, negz, FAST: gl.constexpr):
    """Eight E2M1 nibbles (one int32; nibble n at bits 4n) times a factor -> four bf16x2 words: output j
    holds nibble j (low half) and nibble j + 4 (high half); every step is exact.

    Nibbles j and j + 4 are masked out together (16 bits apart, as in the output) and one integer multiply
    by 2^a + 2^(a+6) puts a copy of each at the bits where its three value bits land on bf16 bits 6-8 and
    another where its sign lands on bit 15; a mask keeps those. As a bf16 that is the E2M1 value times
    2^-126 (exponent field 1-3 is 2^(e-127) (1 + m/2); field 0 the subnormal m 2^-127). Nibbles 2, 3, 6, 7
    take one shift first. Then ``fma.bf16x2`` by ``mult2``: with FAST, once by the scale times 2^(126 -
    FAST_SHIFT) (``_scale_fast``; the caller multiplies the fp32 sums by 2^FAST_SHIFT); without, by 2^126
    (``c126``) and then by the scale itself (``_scale_bf16x2``), exact for every scale byte. ``negz``
    (-0.0) keeps the sign of zero products. 13 integer instructions per 8 weights, 4 of them multiplies
    (on the FMA pipe, off the integer pipe that bound the loop before: BENCHMARKS.md, seventh and eighth
    sessions)."""
    asm: gl.constexpr = _DECODE_FAST if FAST else _DECODE_EXACT
    return gl.inline_asm_elementwise(
        asm=asm, constraints="=r,=r,=r,=r,r,r,r,r", args=[word, mult2, c126, negz],
        dtype=(gl.int32, gl.int32, gl.int32, gl.int32), is_pure=True, pack=1)


@gluon.jit
def _bf16_pair(word):
    """A bf16x2 word as [..., 2] bf16 (low half first)."""
    lo = (word & 0xFFFF).to(gl.int16).to(gl.bfloat16, bitcast=True)
    hi = (word >> 16).to(gl.int16).to(gl.bfloat16, bitcast=True)
    return gl.join(lo, hi)


@gluon.jit
def _decode_word(w, sc2, c126, negz, FAST: gl.constexpr):
    """One word [ROWS, 4U] of each lane, times its factor -> [ROWS, 4U, 2 (h), 2, 2 (j')] bf16: nibble
    j' + 4h of the word (``_e2m1x8_bf16``'s output j', half h)."""
    o0, o1, o2, o3 = _e2m1x8_bf16(w, sc2, c126, negz, FAST)
    return gl.join(gl.join(_bf16_pair(o0), _bf16_pair(o1)), gl.join(_bf16_pair(o2), _bf16_pair(o3)))


@gluon.jit
def _weights_a(raw, sc2, c126, negz, ROWS: gl.constexpr, U: gl.constexpr, S_LAYOUT: gl.constexpr,
               A_OP: gl.constexpr, FAST: gl.constexpr):
    """A step's raw weight words [ROWS, 16U] times their factors (``_scale_factor``) as the MMA's A
    fragment [ROWS, 128U].

    Nibble n = j' + 4h of word j of lane c (memory k = 32c + 8j + 4h + j' of the span) becomes logical
    k = h + 2c + 8j' + 32j, so lane c holds the K pairs the fragment gives it, both halves of a pair from
    one decoded word."""
    a, b = gl.split(raw.reshape((ROWS, 4 * U, 2, 2)))  # word j = j0 + 2 j1: split j0 (last), then j1
    w0, w2 = gl.split(a)
    w1, w3 = gl.split(b)
    w0 = gl.convert_layout(w0, S_LAYOUT, assert_trivial=True)
    w1 = gl.convert_layout(w1, S_LAYOUT, assert_trivial=True)
    w2 = gl.convert_layout(w2, S_LAYOUT, assert_trivial=True)
    w3 = gl.convert_layout(w3, S_LAYOUT, assert_trivial=True)
    q = gl.join(gl.join(_decode_word(w0, sc2, c126, negz, FAST), _decode_word(w1, sc2, c126, negz, FAST)),
                gl.join(_decode_word(w2, sc2, c126, negz, FAST), _decode_word(w3, sc2, c126, negz, FAST)))
    # q: [rows, 4U (span, c), h, j'0, j'1, j0, j1] -> [rows, span, j1, j0, j'1, j'0, c, h]
    logical = q.reshape((ROWS, U, 4, 2, 2, 2, 2, 2)).permute((0, 1, 7, 6, 5, 4, 2, 3)).reshape((ROWS, 128 * U))
    return gl.convert_layout(logical, A_OP, assert_trivial=True)


@gluon.jit
def _acts_b(raw, U: gl.constexpr, B_OP: gl.constexpr):
    """A step's raw activations [8, 64U] (int32 bf16 pairs) as the MMA's B fragment [128U, 8], in the
    weights' K order: pair p = 16c + 4j + 2 i1 + i0 of a span holds memory k = 32c + 8j + 4 i1 + 2 i0 + hh
    (hh: its half), which is logical k = i1 + 2c + 8 (hh + 2 i0) + 32j (``_weights_a``: half h = i1,
    nibble j' = hh + 2 i0). A fragment register pairs halves of two loaded words (one ``prmt``)."""
    pairs = _bf16_pair(raw.reshape((TOKENS, U, 4, 4, 2, 2)))  # [token, span, c, j, i1, i0, hh]
    logical = pairs.permute((0, 1, 3, 5, 6, 2, 4)).reshape((TOKENS, 128 * U))
    return gl.convert_layout(logical.permute((1, 0)), B_OP, assert_trivial=True)


@gluon.jit
def _scale_bf16x2(s):
    """E8M0 bytes (int32) -> 2 ** (s - 127) as bf16 in both halves of an int32 (byte 255: NaN; byte 0 gives
    0, as on the other paths, for the subnormal 2 ** -127)."""
    b = (s << 7) | (((s + 1) >> 2) & 0x40)
    return b | (b << 16)


@gluon.jit
def _scale_fast(s):
    """E8M0 bytes (int32, at most FAST_MAX_SCALE) -> the scale times 2 ** (126 - FAST_SHIFT), i.e.
    2 ** (s - 1 - FAST_SHIFT), as bf16 in both halves of an int32: one multiply puts the exponent field
    in both halves."""
    return (s + (126 - FAST_SHIFT)) * 0x00800080


@gluon.jit
def _scale_factor(s, FAST: gl.constexpr):
    """The factor ``_e2m1x8_bf16`` multiplies a scale group's decoded values by (see there)."""
    if FAST:
        return _scale_fast(s)
    return _scale_bf16x2(s)


@gluon.jit
def _step_ptrs(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn, stride_sn, stride_xm, U: gl.constexpr,
               ROWS: gl.constexpr):
    """Pointers of the first step of U spans (weight words, scale bytes, activation pairs) in the layouts
    of ``_weight_layout`` / ``_scale_layout`` / ``_act_layout``, and their column indices (for masks)."""
    w_layout: gl.constexpr = _weight_layout(gl.num_warps(), ROWS, U)
    s_layout: gl.constexpr = _scale_layout(gl.num_warps(), ROWS, U)
    x_layout: gl.constexpr = _act_layout(gl.num_warps(), U)
    wc = gl.arange(0, 16 * U, layout=gl.SliceLayout(0, w_layout))
    sc = gl.arange(0, 4 * U, layout=gl.SliceLayout(0, s_layout))
    xc = gl.arange(0, 64 * U, layout=gl.SliceLayout(0, x_layout))
    w_ptrs = w_ptr + gl.convert_layout(rows, gl.SliceLayout(1, w_layout))[:, None] * (stride_wn // 4) + wc[None, :]
    s_ptrs = s_ptr + gl.convert_layout(rows, gl.SliceLayout(1, s_layout))[:, None] * stride_sn + sc[None, :]
    x_ptrs = x_ptr + gl.convert_layout(tok_rows, gl.SliceLayout(1, x_layout))[:, None] * stride_xm + xc[None, :]
    return w_ptrs, s_ptrs, x_ptrs, wc, sc, xc


@gluon.jit
def _scales_acts(s_ptrs, x_ptrs, sp, mask_s, mask_x, MASKED: gl.constexpr):
    """Scale bytes (as int32) and activation pairs of the step starting at span ``sp``."""
    if MASKED:
        return (gl.load(s_ptrs + sp * 4, mask=mask_s, other=127).to(gl.int32),
                gl.load(x_ptrs + sp * 64, mask=mask_x, other=0))
    return gl.load(s_ptrs + sp * 4).to(gl.int32), gl.load(x_ptrs + sp * 64)


@gluon.jit
def _dot_rows(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn, stride_sn, stride_xm, n_groups, c126, negz,
              U: gl.constexpr, ROWS: gl.constexpr, STAGES: gl.constexpr, FAST: gl.constexpr):
    """[ROWS, 8] fp32: weight rows ``rows`` of one expert (``w_ptr``: int32 words, ``s_ptr``: scale bytes)
    against the 8 token rows ``tok_rows`` of ``x_ptr`` (int32 bf16 pairs, ``stride_xm`` in pairs) over
    ``n_groups`` scale groups of 32, and the largest scale byte read (the sums are exact only when FAST
    is off or that is at most FAST_MAX_SCALE). Steps of U spans (4 groups each); the next step's scales
    and activations are loaded while one computes (a register double buffer), and its weights too when
    STAGES == 1; with STAGES > 1 the weights stream through a ring of STAGES shared-memory tiles
    (cp.async, STAGES steps ahead; each thread copies the words it reads, so no barrier). A last
    partial span is masked (zero weights and activations)."""
    mma: gl.constexpr = _mma_layout(gl.num_warps())
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    w_layout: gl.constexpr = _weight_layout(gl.num_warps(), ROWS, U)
    s_layout: gl.constexpr = _scale_layout(gl.num_warps(), ROWS, U)
    acc = gl.zeros((ROWS, TOKENS), gl.float32, layout=mma)
    top = gl.zeros((ROWS, 4 * U), gl.int32, layout=s_layout)
    w_ptrs, s_ptrs, x_ptrs, wc, sc, xc = _step_ptrs(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn, stride_sn,
                                                    stride_xm, U, ROWS)
    n_steps = n_groups // (4 * U)
    if n_steps > 0:
        if STAGES > 1:
            ring = gl.allocate_shared_memory(gl.int32, [STAGES, ROWS, 16 * U],
                                             gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0]))
            for i in gl.static_range(STAGES):
                async_copy.async_copy_global_to_shared(ring.index(i), w_ptrs + gl.minimum(i, n_steps - 1) * U * 16)
                async_copy.commit_group()
        else:
            raw_w = gl.load(w_ptrs)
        raw_s, raw_x = _scales_acts(s_ptrs, x_ptrs, 0, None, None, False)
        for st in range(0, n_steps):
            nxt = gl.minimum(st + 1, n_steps - 1) * U  # the last step reloads itself (no out-of-range read)
            nxt_s, nxt_x = _scales_acts(s_ptrs, x_ptrs, nxt, None, None, False)
            if STAGES > 1:
                async_copy.wait_group(STAGES - 1)  # step st has landed
                raw_w = ring.index(st % STAGES).load(w_layout)
            else:
                nxt_w = gl.load(w_ptrs + nxt * 16)
            top = gl.maximum(top, raw_s)
            acc = mma_v2(_weights_a(raw_w, _scale_factor(raw_s, FAST), c126, negz, ROWS, U, s_layout, a_op, FAST),
                         _acts_b(raw_x, U, b_op), acc)
            if STAGES > 1:  # refill the slot just read (its values are consumed above) with step st + STAGES
                async_copy.async_copy_global_to_shared(ring.index(st % STAGES),
                                                       w_ptrs + gl.minimum(st + STAGES, n_steps - 1) * U * 16)
                async_copy.commit_group()
            else:
                raw_w = nxt_w
            raw_s, raw_x = nxt_s, nxt_x
        if STAGES > 1:
            async_copy.wait_group(0)
    # the groups after the last whole step, one (masked) span at a time
    s1_layout: gl.constexpr = _scale_layout(gl.num_warps(), ROWS, 1)
    top1 = gl.zeros((ROWS, 4), gl.int32, layout=s1_layout)
    w1_ptrs, s1_ptrs, x1_ptrs, wc1, sc1, xc1 = _step_ptrs(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn,
                                                          stride_sn, stride_xm, 1, ROWS)
    for sp in range(n_steps * U, gl.cdiv(n_groups, 4)):
        left = n_groups - 4 * sp  # groups of this span inside K
        one_w = gl.load(w1_ptrs + sp * 16, mask=(wc1 // 4 < left)[None, :], other=0)
        one_s, one_x = _scales_acts(s1_ptrs, x1_ptrs, sp, (sc1 < left)[None, :], (xc1 // 16 < left)[None, :], True)
        top1 = gl.maximum(top1, one_s)
        acc = mma_v2(_weights_a(one_w, _scale_factor(one_s, FAST), c126, negz, ROWS, 1, s1_layout, a_op, FAST),
                     _acts_b(one_x, 1, b_op), acc)
    if FAST:
        acc = acc * (1 << FAST_SHIFT)
    return acc, gl.maximum(gl.max(gl.max(top, axis=1), axis=0), gl.max(gl.max(top1, axis=1), axis=0))


@gluon.jit
def _dot_rows_checked(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn, stride_sn, stride_xm, n_groups, c126,
                      negz, U: gl.constexpr, ROWS: gl.constexpr, STAGES: gl.constexpr):
    """``_dot_rows`` on the fast decode, and again on the exact one where the tile read a scale byte
    above FAST_MAX_SCALE (a uniform branch: the whole CTA takes it or not)."""
    acc, top = _dot_rows(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn, stride_sn, stride_xm, n_groups, c126,
                         negz, U, ROWS, STAGES, True)
    if top > FAST_MAX_SCALE:
        acc, top = _dot_rows(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn, stride_sn, stride_xm, n_groups, c126,
                             negz, U, ROWS, STAGES, False)
    return acc


@gluon.jit
def _owner_slots(ids_ptr, pid_m, T, E, T_PAD: gl.constexpr):
    """Decode routing: expert of slot ``pid_m``, whether this slot is its first, matches and their ranks
    (the latter two along the slots of ``_token_layout``)."""
    flat: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])  # Triton 3.6 scans no slice layouts
    q = gl.arange(0, T_PAD, layout=flat)
    e = gl.load(ids_ptr + pid_m)
    match = gl.load(ids_ptr + q, mask=q < T, other=-1) == e
    first = gl.min(gl.where(match, q, T_PAD), axis=0)
    hits = match.to(gl.int32)
    rank = tl.cumsum(hits, axis=0) - 1
    slots: gl.constexpr = gl.SliceLayout(0, _token_layout(gl.num_warps()))
    owns = (e >= 0) & (e < E) & (first == pid_m)
    return e, owns, gl.convert_layout(match, slots), gl.convert_layout(rank, slots), gl.sum(hits, axis=0)


@gluon.jit
def _chunk_slots(match, rank, count, c, T_PAD: gl.constexpr):
    """The slots of ranks c .. c+7 among the matches ([8], slot 0 stands in where absent) and which exist."""
    tl_layout: gl.constexpr = _token_layout(gl.num_warps())
    r = c + gl.arange(0, TOKENS, layout=gl.SliceLayout(1, tl_layout))
    q = gl.arange(0, T_PAD, layout=gl.SliceLayout(0, tl_layout))
    sel = match[None, :] & (rank[None, :] == r[:, None])
    return gl.sum(gl.where(sel, q[None, :], 0), axis=1), r < count


@gluon.jit
def _store_route(route_ptr, pid_m, owns, match, rank, count, T_PAD: gl.constexpr):
    """The first GEMM's routing, for the second: row ``pid_m`` of ``route`` ([T, 1 + T_PAD] int32) holds the
    number of slots this slot works for (0 unless it is its expert's first) and then those slots by rank."""
    slots: gl.constexpr = gl.SliceLayout(0, _token_layout(gl.num_warps()))
    q = gl.arange(0, T_PAD, layout=slots)
    row = route_ptr + pid_m * (T_PAD + 1)
    gl.store(row + 1 + rank, q, mask=match & owns)
    gl.store(row + q, gl.where(owns, count, 0), mask=q == 0)


@gluon.jit
def _route_slots(route_ptr, pid_m, count, c, T_PAD: gl.constexpr, LAYOUT: gl.constexpr):
    """``_chunk_slots`` from ``_store_route``'s row, loaded straight into ``LAYOUT`` (no data exchange):
    the slots of ranks c .. c+7 (slot 0 where absent) and which exist."""
    r = c + gl.arange(0, TOKENS, layout=LAYOUT)
    ok = r < count
    return gl.load(route_ptr + pid_m * (T_PAD + 1) + 1 + r, mask=ok, other=0), ok


@gluon.jit
def _moe_mma1(x_ptr, w_ptr, s_ptr, b_ptr, h_ptr, ws_ptr, ids_ptr, route_ptr, T, K, I, E, top_k, limit, split_steps,
              stride_xm, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_hm, stride_wss, stride_wsm,
              ACT: gl.constexpr, LAYOUT: gl.constexpr, HAS_BIAS: gl.constexpr, T_PAD: gl.constexpr,
              BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr, SPLIT: gl.constexpr,
              PDL: gl.constexpr = False):
    """h[slot] = act(x[slot // top_k] @ deq(w13[e]).T) for BLOCK_N/2 intermediate columns, 8 tokens a pass.

    The tile's rows are BLOCK_N/2 gate rows, then the matching up rows: row r and r + BLOCK_N/2 of the
    accumulator sit in one thread, so the activation needs no data exchange. With SPLIT > 1 the third grid
    axis splits K: program k sums ``split_steps`` BLOCK_K steps from step ``k * split_steps`` (the last split
    what is left of K: fewer steps, and the groups after the last whole step) and stores the fp32 gate and up
    sums in its slab of the workspace (gate at column c, up at I + c); ``_moe_gemv._moe_act`` adds the splits
    and activates. PDL: the first launch of a chain (``_pdl``), it lets the next one start."""
    if PDL:
        gl_gdc_launch_dependents()
    HALF: gl.constexpr = BLOCK_N // 2
    mma: gl.constexpr = _mma_layout(gl.num_warps())
    pid_m = gl.program_id(0)
    e, owns, match, rank, count = _owner_slots(ids_ptr, pid_m, T, E, T_PAD)
    if (gl.program_id(1) == 0) & (gl.program_id(2) == 0):
        _store_route(route_ptr, pid_m, owns, match, rank, count, T_PAD)
    if owns:
        e64 = e.to(gl.int64)
        c126, negz = _tables(K)
        r = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, mma))
        col = gl.program_id(1) * HALF + r % HALF
        g_w, u_w = _gate_up_rows(gl.where(col < I, col, 0), I, LAYOUT)  # clamped: unmasked weight loads
        rows = gl.where(r < HALF, g_w, u_w)
        cols = gl.program_id(1) * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(1, mma))
        g_rows, u_rows = _gate_up_rows(gl.where(cols < I, cols, 0), I, LAYOUT)
        w_base = w_ptr + e64 * (stride_we // 4)
        s_base = s_ptr + e64 * stride_se
        groups = K // 32
        if SPLIT > 1:  # this split's groups: whole steps (a multiple of BLOCK_K // 32 from the start)
            g0 = gl.program_id(2) * split_steps * (BLOCK_K // 32)
            groups = gl.minimum(groups - g0, split_steps * (BLOCK_K // 32))
            w_base += g0 * 4  # 16 bytes of a row per group
            s_base += g0
            x_ptr += g0 * 16  # 32 bf16 values (int32 pairs) per group
            ws_ptr += gl.program_id(2) * stride_wss
        for c in range(0, count, TOKENS):
            slots, ok = _chunk_slots(match, rank, count, c, T_PAD)
            acc = _dot_rows_checked(w_base, s_base, rows, x_ptr, slots // top_k, stride_wn, stride_sn, stride_xm,
                                    groups, c126, negz, BLOCK_K // 128, BLOCK_N, STAGES)
            g, u = gl.split(acc.reshape((2, HALF, TOKENS)).permute((1, 2, 0)))
            g = gl.convert_layout(g, mma, assert_trivial=True)
            u = gl.convert_layout(u, mma, assert_trivial=True)
            s_out = gl.convert_layout(slots, gl.SliceLayout(0, mma))
            ok_out = gl.convert_layout(ok, gl.SliceLayout(0, mma))
            mask = (cols < I)[:, None] & ok_out[None, :]
            if SPLIT > 1:
                ws_rows = ws_ptr + s_out[None, :] * stride_wsm + cols[:, None]
                gl.store(ws_rows, g, mask=mask)
                gl.store(ws_rows + I, u, mask=mask)
            else:
                h = _activate(g, u, b_ptr + e64 * stride_be, g_rows[:, None], u_rows[:, None], limit, ACT,
                              HAS_BIAS)
                gl.store(h_ptr + s_out[None, :] * stride_hm + cols[:, None], h, mask=mask)


@gluon.jit
def _down_store(acc, b_ptr, tw_ptr, out_ptr, e64, cols, s_out, ok_out, stride_be, stride_om, HAS_BIAS: gl.constexpr):
    """The second GEMM's epilogue: ``(acc + b2[cols]) * topk_weight`` of the slots ``s_out`` into their fp32
    rows of ``out`` (columns ``cols``, all inside N; slots that do not exist masked)."""
    if HAS_BIAS:
        acc += gl.load(b_ptr + e64 * stride_be + cols)[:, None]
    acc = acc * gl.load(tw_ptr + s_out)[None, :]
    gl.store(out_ptr + s_out[None, :] * stride_om + cols[:, None], acc, mask=ok_out[None, :])


@gluon.jit
def _down_tiles(w_ptr, s_ptr, b_ptr, tw_ptr, out_ptr, e64, first, tiles, x_ptr, slots, s_out, ok_out, stride_wn,
                stride_sn, stride_am, stride_be, stride_om, n_groups, c126, negz, HAS_BIAS: gl.constexpr,
                U: gl.constexpr, ROWS: gl.constexpr, FAST: gl.constexpr):
    """The second GEMM over ``tiles`` row tiles of ROWS weight rows, from tile ``first`` (every tile inside N, K
    a whole number of steps): one software pipeline over the (tile, step) pairs, so the next pair's weights,
    scales and activations load while one computes, across tiles too (at DeepSeek-V4-Flash TP 8, I = 256, a
    tile is one step: with one tile per program nothing would overlap its loads). Each tile's sums are
    stored when its last step is done (``_down_store``). Returns the largest scale byte read (see
    ``_dot_rows_checked``: with FAST, the caller redoes the whole program on the exact decode above
    FAST_MAX_SCALE, storing the same slots and columns again)."""
    mma: gl.constexpr = _mma_layout(gl.num_warps())
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    s_layout: gl.constexpr = _scale_layout(gl.num_warps(), ROWS, U)
    r = gl.arange(0, ROWS, layout=gl.SliceLayout(1, mma))
    w_ptrs, s_ptrs, x_ptrs, wc, sc, xc = _step_ptrs(w_ptr, s_ptr, first * ROWS + r, x_ptr, slots, stride_wn,
                                                    stride_sn, stride_am, U, ROWS)
    tile_w = ROWS * (stride_wn // 4)  # words between two row tiles
    tile_s = ROWS * stride_sn
    n_steps = n_groups // (4 * U)
    total = tiles * n_steps
    acc = gl.zeros((ROWS, TOKENS), gl.float32, layout=mma)
    top = gl.zeros((ROWS, 4 * U), gl.int32, layout=s_layout)
    raw_w = gl.load(w_ptrs)
    raw_s, raw_x = _scales_acts(s_ptrs, x_ptrs, 0, None, None, False)
    tile = 0
    step = 0
    for i in range(0, total):
        # the next pair: the next step of this tile, or the first step of the next tile (the last reloads itself)
        last = step == n_steps - 1
        nxt_tile = gl.where(last & (i + 1 < total), tile + 1, tile)
        nxt_step = gl.where(last, gl.where(i + 1 < total, 0, step), step + 1)
        nxt_w = gl.load(w_ptrs + nxt_tile * tile_w + nxt_step * U * 16)
        nxt_s = gl.load(s_ptrs + nxt_tile * tile_s + nxt_step * U * 4).to(gl.int32)
        nxt_x = gl.load(x_ptrs + nxt_step * U * 64)
        top = gl.maximum(top, raw_s)
        acc = mma_v2(_weights_a(raw_w, _scale_factor(raw_s, FAST), c126, negz, ROWS, U, s_layout, a_op, FAST),
                     _acts_b(raw_x, U, b_op), acc)
        if last:
            if FAST:
                acc = acc * (1 << FAST_SHIFT)
            _down_store(acc, b_ptr, tw_ptr, out_ptr, e64, (first + tile) * ROWS + r, s_out, ok_out, stride_be,
                        stride_om, HAS_BIAS)
            acc = gl.zeros((ROWS, TOKENS), gl.float32, layout=mma)
        tile = nxt_tile
        step = nxt_step
        raw_w, raw_s, raw_x = nxt_w, nxt_s, nxt_x
    return gl.max(gl.max(top, axis=1), axis=0)


@gluon.jit
def _moe_mma2(a_ptr, w_ptr, s_ptr, b_ptr, out_ptr, tw_ptr, ids_ptr, route_ptr, N, KI, E,
              stride_am, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_om,
              HAS_BIAS: gl.constexpr, T_PAD: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
              STAGES: gl.constexpr, TILES: gl.constexpr = 1, PDL: gl.constexpr = False,
              PREFETCH: gl.constexpr = False):
    """out[slot] = (a[slot] @ deq(w2[e]).T + b2) * topk_weight for TILES x BLOCK_N output columns, 8 slots a
    pass; the routing is the first GEMM's (``_store_route``). TILES > 1 (config DOWN_TILES; N a multiple of
    BLOCK_N, KI of BLOCK_K, no ring): the program's row tiles in one pipeline (``_down_tiles``). PDL: a later
    launch of a chain (``_pdl``); with PREFETCH its weight rows go to L2 before the wait (from every slot of a
    valid expert: which slot owns the expert is the first GEMM's output, read after the wait)."""
    mma: gl.constexpr = _mma_layout(gl.num_warps())
    x_rows: gl.constexpr = gl.SliceLayout(1, _act_layout(gl.num_warps(), BLOCK_K // 128))
    pid_m = gl.program_id(0)
    e = gl.load(ids_ptr + pid_m)
    if PDL:
        gl_gdc_launch_dependents()
        if PREFETCH:
            if (e >= 0) & (e < E):
                row0 = gl.program_id(1) * (TILES * BLOCK_N)
                rows = gl.minimum(N, row0 + TILES * BLOCK_N) - row0
                e_pf = e.to(gl.int64)
                gl_prefetch_l2(w_ptr + e_pf * (stride_we // 4) + row0 * (stride_wn // 4), rows.to(gl.int64) * stride_wn)
                gl_prefetch_l2(s_ptr + e_pf * stride_se + row0 * stride_sn, rows.to(gl.int64) * stride_sn)
        gl_gdc_wait()
    count = gl.load(route_ptr + pid_m * (T_PAD + 1))
    if (count > 0) & (e >= 0):  # (e >= 0 follows from count > 0; reading e here overlaps its load with count's)
        e64 = e.to(gl.int64)
        c126, negz = _tables(KI)
        w_e = w_ptr + e64 * (stride_we // 4)
        s_e = s_ptr + e64 * stride_se
        for c in range(0, count, TOKENS):
            slots, _ = _route_slots(route_ptr, pid_m, count, c, T_PAD, x_rows)  # the activation rows
            s_out, ok_out = _route_slots(route_ptr, pid_m, count, c, T_PAD, gl.SliceLayout(0, mma))  # the output's
            if TILES > 1:
                first = gl.program_id(1) * TILES
                tiles = gl.minimum(TILES, N // BLOCK_N - first)
                top = _down_tiles(w_e, s_e, b_ptr, tw_ptr, out_ptr, e64, first, tiles, a_ptr, slots, s_out, ok_out,
                                  stride_wn, stride_sn, stride_am, stride_be, stride_om, KI // 32, c126, negz,
                                  HAS_BIAS, BLOCK_K // 128, BLOCK_N, True)
                if top > FAST_MAX_SCALE:
                    _down_tiles(w_e, s_e, b_ptr, tw_ptr, out_ptr, e64, first, tiles, a_ptr, slots, s_out, ok_out,
                                stride_wn, stride_sn, stride_am, stride_be, stride_om, KI // 32, c126, negz,
                                HAS_BIAS, BLOCK_K // 128, BLOCK_N, False)
            else:
                cols = gl.program_id(1) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, mma))
                safe = gl.where(cols < N, cols, 0)
                acc = _dot_rows_checked(w_e, s_e, safe, a_ptr, slots, stride_wn, stride_sn, stride_am, KI // 32, c126,
                                        negz, BLOCK_K // 128, BLOCK_N, STAGES)
                if HAS_BIAS:
                    acc += gl.load(b_ptr + e64 * stride_be + safe)[:, None]
                acc = acc * gl.load(tw_ptr + s_out)[None, :]
                gl.store(out_ptr + s_out[None, :] * stride_om + cols[:, None], acc,
                         mask=(cols < N)[:, None] & ok_out[None, :])
