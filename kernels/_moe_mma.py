"""MMA path of the MXFP4 MoE (config ``PATH="mma"``): decode batches on the tensor cores, GPU only (Gluon).

The gemv path (``_moe_gemv.py``) is issue-bound: per weight one fp32 FMA plus about 2.6 decode
instructions. Here the weights are the M side of ``mma.sync.m16n8k16`` (bf16 in, fp32 out) and up to 8
tokens of one expert are its N side, so a pass over an expert's weights serves every token routed to it
and the tensor cores do the multiplies. The decoded E2M1 values go from registers straight into the MMA's
A fragment, which Triton's ``tl.dot`` cannot do (it sends such a tile through shared memory); Gluon's
explicit layouts can, and the compiler checks that no data moves (``assert_trivial``).

Layouts, for one scale group (32 values of K, 16 bytes of a weight row):
- ``_weight_layout``: lane ``c`` (``lane % 4``) loads bytes ``4c .. 4c+3`` of its rows (one 32-bit load),
  lanes ``lane // 4`` and the registers walk the rows exactly as the MMA's A fragment does. The fragment
  wants lane ``c`` to hold the K pairs ``2c, 2c+1`` and ``2c+8, 2c+9`` of each 16-wide K step: the
  kernel therefore feeds the MMA a *permuted* K (a sum over K does not care about its order). Within a
  group, memory byte ``4c + i`` becomes logical byte ``c + 4i`` (a reshape and permute: no data moves),
  and both nibbles of a byte stay adjacent (the fragment's bf16 pairs).
- ``_act_layout``: the activations get the same permutation. Lane ``c`` loads activations ``8c .. 8c+7``
  of its token (one 16-byte load), which the same kind of relabelling turns into the B fragment.
Each group's MMA starts from zero and its fp32 result is scaled by the group's E8M0 factor (byte 255 is
NaN), so every product is exact and only the order of the fp32 sums differs from the reference.

E2M1 -> bf16 (``_e2m1x8_bf16``): per 32-bit register (8 values) two byte-table lookups (``prmt``) give
the high and low bytes of the bf16 magnitudes, a third the sign bytes, and two more interleave them:
17 instructions per 8 weights. The table words come from ``_tables``: ``min(K, 0)`` plus the constant,
which ptxas cannot fold, so they stay in registers instead of being rebuilt before every lookup.

Grid and routing as on the gemv path (``_owner``: the first slot of each expert does the work, no sort,
CUDA-graph safe); the owner loops over its tokens 8 at a time. The first GEMM's program computes
BLOCK_N/2 gate and BLOCK_N/2 up rows (two accumulators, so the activation needs no data exchange) and
writes bf16 ``h``; the second writes ``(h @ w2.T + b2) * weight`` per slot in fp32 for the reduce.
Needs group_size a multiple of 32, and K and I multiples of 32 (``mxfp4_moe._path_fits``).
"""
from __future__ import annotations

import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2

from aotune.kernels._moe_kernels import _activate, _gate_up_rows

TOKENS = gl.constexpr(8)  # the MMA's N: tokens of one expert per pass over its weights
PREFETCH = gl.constexpr(1024)  # bytes of a weight row asked of L2 ahead of the loads (0: none)


@gluon.constexpr_function
def _mma_layout(warps):
    return gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[warps, 1], instr_shape=[16, 8])


@gluon.constexpr_function
def _weight_layout(warps, rows, groups):
    """[rows, 4 * groups] int32 words of weight bytes: lane c holds word c (bytes 4c .. 4c+3) of each group."""
    reps = rows // (16 * warps)
    return gl.DistributedLinearLayout(
        reg_bases=[[8, 0]] + [[0, 4 << i] for i in range(groups.bit_length() - 1)]
        + [[16 * warps << i, 0] for i in range(reps.bit_length() - 1)],
        lane_bases=[[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[16 << i, 0] for i in range(warps.bit_length() - 1)], block_bases=[], shape=[rows, 4 * groups])


@gluon.constexpr_function
def _scale_layout(warps, rows, groups):
    """[rows, groups] scale bytes, rows as in the MMA accumulator (the four lanes of a row share them)."""
    reps = rows // (16 * warps)
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 1 << i] for i in range(groups.bit_length() - 1)] + [[8, 0]]
        + [[16 * warps << i, 0] for i in range(reps.bit_length() - 1)],
        lane_bases=[[0, 0], [0, 0], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[16 << i, 0] for i in range(warps.bit_length() - 1)], block_bases=[], shape=[rows, groups])


@gluon.constexpr_function
def _act_layout(warps, groups):
    """[8 tokens, 16 * groups] int32 bf16 pairs: lane c holds pairs 4c .. 4c+3 (k 8c .. 8c+7) of each group;
    every warp a copy."""
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2]] + [[0, 16 << i] for i in range(groups.bit_length() - 1)],
        lane_bases=[[0, 4], [0, 8], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[0, 0]] * (warps.bit_length() - 1), block_bases=[], shape=[TOKENS, 16 * groups])


@gluon.constexpr_function
def _token_layout(warps):
    """[8, T_PAD] slot matching (routing)."""
    return gl.BlockedLayout([1, 1], [1, 32], [1, warps], [1, 0])


@gluon.jit
def _tables(K):
    """The five lookup words of ``_e2m1x8_bf16``, as values ptxas cannot rebuild from immediates."""
    z = gl.minimum(K, 0)
    return z + -1065353216, z + -1065336832, z + 0x3F3F3F00, z + 0x40404040, z + 0x8000


@gluon.jit
def _e2m1x8_bf16(word, t0, t1, t2, t3, t4):
    """Four E2M1 bytes (one int32) -> four bf16x2 words: byte i's (low, high nibble) is output i.

    t0/t1: low bytes of the bf16 magnitudes 0, .5, 1, 1.5 / 2, 3, 4, 6 (table index = nibble & 7);
    t2/t3: their high bytes; t4: sign bytes 0x00, 0x80 (index = sign bit)."""
    return gl.inline_asm_elementwise(
        asm="""{
        .reg .b32 s, m, mh, sl, sh, l0, l1, h0, h1, g0, g1;
        and.b32 s, $4, 0x88888888;
        and.b32 m, $4, 0x77777777;
        shr.u32 mh, m, 16;
        shr.u32 sl, s, 3;
        shr.u32 sh, s, 19;
        prmt.b32 l0, $5, $6, m;
        prmt.b32 l1, $5, $6, mh;
        prmt.b32 h0, $7, $8, m;
        prmt.b32 h1, $7, $8, mh;
        prmt.b32 g0, $9, 0, sl;
        prmt.b32 g1, $9, 0, sh;
        or.b32 h0, h0, g0;
        or.b32 h1, h1, g1;
        prmt.b32 $0, l0, h0, 0x5140;
        prmt.b32 $1, l0, h0, 0x7362;
        prmt.b32 $2, l1, h1, 0x5140;
        prmt.b32 $3, l1, h1, 0x7362;
        }""",
        constraints="=r,=r,=r,=r,r,r,r,r,r,r",
        args=[word, t0, t1, t2, t3, t4], dtype=(gl.int32, gl.int32, gl.int32, gl.int32), is_pure=True, pack=1)


@gluon.jit
def _bf16_pair(word):
    """A bf16x2 word as [..., 2] bf16 (low half first)."""
    lo = (word & 0xFFFF).to(gl.int16).to(gl.bfloat16, bitcast=True)
    hi = (word >> 16).to(gl.int16).to(gl.bfloat16, bitcast=True)
    return gl.join(lo, hi)


@gluon.jit
def _prefetch_l2(ptrs):
    """Ask L2 for the line at each pointer (no register waits for it): far-ahead weight rows."""
    gl.inline_asm_elementwise(asm="prefetch.global.L2 [$1];\n mov.u32 $0, 0;", constraints="=r,l", args=[ptrs],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _pick(t, u: gl.constexpr, U: gl.constexpr, N: gl.constexpr):
    """Column ``u`` of ``t`` [N, U] whose U axis lives in registers (U <= 8), by splits: no data moves."""
    x = t
    if U >= 2:
        a, b = gl.split(x.reshape((N, U // 2, 2)))
        if u % 2 == 1:
            x = b
        else:
            x = a
    if U >= 4:
        a, b = gl.split(x.reshape((N, U // 4, 2)))
        if (u // 2) % 2 == 1:
            x = b
        else:
            x = a
    if U >= 8:
        a, b = gl.split(x.reshape((N, 1, 2)))
        if (u // 4) % 2 == 1:
            x = b
        else:
            x = a
    return x.reshape((N,))


@gluon.jit
def _weights_a(raw, u: gl.constexpr, U: gl.constexpr, t0, t1, t2, t3, t4, ROWS: gl.constexpr,
               A_OP: gl.constexpr):
    """Group ``u`` of a step's raw weight words [ROWS, 4U] as the MMA's A fragment [ROWS, 32]: memory
    byte 4c + i of the group becomes logical byte c + 4i (see the module doc)."""
    words = _pick(raw.reshape((ROWS, U, 4)).permute((0, 2, 1)).reshape((ROWS * 4, U)), u, U, ROWS * 4)
    o0, o1, o2, o3 = _e2m1x8_bf16(words.reshape((ROWS, 4)), t0, t1, t2, t3, t4)
    q = gl.join(gl.join(_bf16_pair(o0), _bf16_pair(o1)), gl.join(_bf16_pair(o2), _bf16_pair(o3)))
    logical = q.permute((0, 4, 3, 1, 2)).reshape((ROWS, 32))  # k = 8i + 2c + nibble
    return gl.convert_layout(logical, A_OP, assert_trivial=True)


@gluon.jit
def _acts_b(raw, u: gl.constexpr, U: gl.constexpr, B_OP: gl.constexpr):
    """Group ``u`` of a step's raw activations [8, 16U] (int32 bf16 pairs) as the MMA's B fragment [32, 8]:
    memory k = 8c + 2j + h becomes logical k = 8j + 2c + h, the weights' permuted order."""
    words = _pick(raw.reshape((TOKENS, U, 16)).permute((0, 2, 1)).reshape((TOKENS * 16, U)), u, U, TOKENS * 16)
    pairs = _bf16_pair(words.reshape((TOKENS, 4, 4)))  # [token, c, j, h]
    logical = pairs.permute((0, 2, 1, 3)).reshape((TOKENS, 32))
    return gl.convert_layout(logical.permute((1, 0)), B_OP, assert_trivial=True)


@gluon.jit
def _scale_factors(s):
    """E8M0 bytes -> fp32 factors 2 ** (s - 127); byte 255 gives NaN."""
    s = s.to(gl.int32)
    return ((s << 23) | (((s + 1) << 14) & 0x400000)).to(gl.float32, bitcast=True)


@gluon.jit
def _load_step(w_ptrs, s_rows, g0, G: gl.constexpr, U: gl.constexpr, S_LAYOUT: gl.constexpr):
    """Raw weight words [ROWS, 4U] and fp32 scale factors [ROWS, U] of groups g0 .. g0+U-1 of one row set."""
    uu = gl.arange(0, U, layout=gl.SliceLayout(0, S_LAYOUT))
    if G == 32:  # contiguous: one load of U bytes per row
        cols = g0 + uu
    else:
        cols = ((g0 + uu) * 32) // G
    return gl.load(w_ptrs + g0 * 4), _scale_factors(gl.load(s_rows[:, None] + cols[None, :]))


@gluon.jit
def _step(acc, raw_w, raw_s, raw_x, zero, t0, t1, t2, t3, t4, U: gl.constexpr, ROWS: gl.constexpr,
          MMA: gl.constexpr, A_OP: gl.constexpr, B_OP: gl.constexpr):
    """acc [ROWS, 8] += sum over the step's U groups of scale * (weights . activations)."""
    for u in gl.static_range(U):
        p = mma_v2(_weights_a(raw_w, u, U, t0, t1, t2, t3, t4, ROWS, A_OP), _acts_b(raw_x, u, U, B_OP), zero)
        sf = gl.convert_layout(_pick(raw_s, u, U, ROWS), gl.SliceLayout(1, MMA), assert_trivial=True)
        acc = acc + p * sf[:, None]
    return acc


@gluon.jit
def _dot_rows(w_ptr, s_ptr, rows, x_ptr, tok_rows, stride_wn, stride_sn, stride_xm, n_groups, t0, t1, t2, t3,
              t4, G: gl.constexpr, U: gl.constexpr, ROWS: gl.constexpr):
    """[ROWS, 8] fp32: weight rows ``rows`` (of the expert at ``w_ptr``, int32 words / ``s_ptr``) against the 8 token
    rows ``tok_rows`` of ``x_ptr`` (int32 bf16 pairs, ``stride_xm`` in pairs), over ``n_groups`` scale groups; the next step's bytes are loaded while
    one step computes (a register double buffer), then the groups that make no whole step."""
    mma: gl.constexpr = _mma_layout(gl.num_warps())
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    b_op: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    w_layout: gl.constexpr = _weight_layout(gl.num_warps(), ROWS, U)
    s_layout: gl.constexpr = _scale_layout(gl.num_warps(), ROWS, U)
    x_layout: gl.constexpr = _act_layout(gl.num_warps(), U)
    zero = gl.zeros((ROWS, TOKENS), gl.float32, layout=mma)
    acc = gl.zeros((ROWS, TOKENS), gl.float32, layout=mma)
    r_w = gl.convert_layout(rows, gl.SliceLayout(1, w_layout))
    w_ptrs = w_ptr + r_w[:, None] * (stride_wn // 4) + gl.arange(0, 4 * U, layout=gl.SliceLayout(0, w_layout))[None, :]
    s_rows = s_ptr + gl.convert_layout(rows, gl.SliceLayout(1, s_layout)) * stride_sn
    x_ptrs = x_ptr + gl.convert_layout(tok_rows, gl.SliceLayout(1, x_layout))[:, None] * stride_xm \
        + gl.arange(0, 16 * U, layout=gl.SliceLayout(0, x_layout))[None, :]
    n_steps = n_groups // U
    pf_rows = w_ptr + gl.convert_layout(rows, gl.SliceLayout(1, w_layout)) * (stride_wn // 4) + PREFETCH // 4
    pf_end = n_groups * 4 - PREFETCH // 4
    raw_w, raw_s = _load_step(w_ptrs, s_rows, 0, G, U, s_layout)
    raw_x = gl.load(x_ptrs)
    for st in range(0, n_steps):
        nxt = gl.minimum(st + 1, n_steps - 1) * U  # the last step reloads itself (no out-of-range read)
        nxt_w, nxt_s = _load_step(w_ptrs, s_rows, nxt, G, U, s_layout)
        nxt_x = gl.load(x_ptrs + nxt * 16)
        if PREFETCH > 0:
            _prefetch_l2(pf_rows + gl.minimum(st * U * 4, pf_end))
        acc = _step(acc, raw_w, raw_s, raw_x, zero, t0, t1, t2, t3, t4, U, ROWS, mma, a_op, b_op)
        raw_w, raw_s, raw_x = nxt_w, nxt_s, nxt_x
    w1_layout: gl.constexpr = _weight_layout(gl.num_warps(), ROWS, 1)
    s1_layout: gl.constexpr = _scale_layout(gl.num_warps(), ROWS, 1)
    x1_layout: gl.constexpr = _act_layout(gl.num_warps(), 1)
    w1_ptrs = w_ptr + gl.convert_layout(rows, gl.SliceLayout(1, w1_layout))[:, None] * (stride_wn // 4) \
        + gl.arange(0, 4, layout=gl.SliceLayout(0, w1_layout))[None, :]
    s1_rows = s_ptr + gl.convert_layout(rows, gl.SliceLayout(1, s1_layout)) * stride_sn
    x1_ptrs = x_ptr + gl.convert_layout(tok_rows, gl.SliceLayout(1, x1_layout))[:, None] * stride_xm \
        + gl.arange(0, 16, layout=gl.SliceLayout(0, x1_layout))[None, :]
    for g in range(n_steps * U, n_groups):
        one_w, one_s = _load_step(w1_ptrs, s1_rows, g, G, 1, s1_layout)
        acc = _step(acc, one_w, one_s, gl.load(x1_ptrs + g * 16), zero, t0, t1, t2, t3, t4, 1, ROWS, mma, a_op,
                    b_op)
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
def _moe_mma1(x_ptr, w_ptr, s_ptr, b_ptr, h_ptr, ids_ptr, T, K, I, E, top_k, limit,
              stride_xm, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_hm,
              ACT: gl.constexpr, LAYOUT: gl.constexpr, HAS_BIAS: gl.constexpr, T_PAD: gl.constexpr,
              BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, G: gl.constexpr):
    """h[slot] = act(x[slot // top_k] @ deq(w13[e]).T) for BLOCK_N/2 intermediate columns, 8 tokens a pass.

    The tile's rows are BLOCK_N/2 gate rows, then the matching up rows: row r and r + BLOCK_N/2 of the
    accumulator sit in one thread, so the activation needs no data exchange."""
    HALF: gl.constexpr = BLOCK_N // 2
    mma: gl.constexpr = _mma_layout(gl.num_warps())
    pid_m = gl.program_id(0)
    e, owns, match, rank, count = _owner_slots(ids_ptr, pid_m, T, E, T_PAD)
    if owns:
        e64 = e.to(gl.int64)
        t0, t1, t2, t3, t4 = _tables(K)
        r = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, mma))
        col = gl.program_id(1) * HALF + r % HALF
        g_w, u_w = _gate_up_rows(gl.where(col < I, col, 0), I, LAYOUT)  # clamped: unmasked weight loads
        rows = gl.where(r < HALF, g_w, u_w)
        cols = gl.program_id(1) * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(1, mma))
        g_rows, u_rows = _gate_up_rows(gl.where(cols < I, cols, 0), I, LAYOUT)
        for c in range(0, count, TOKENS):
            slots, ok = _chunk_slots(match, rank, count, c, T_PAD)
            acc = _dot_rows(w_ptr + e64 * (stride_we // 4), s_ptr + e64 * stride_se, rows, x_ptr, slots // top_k,
                            stride_wn, stride_sn, stride_xm, K // 32, t0, t1, t2, t3, t4, G, BLOCK_K // 32, BLOCK_N)
            g, u = gl.split(acc.reshape((2, HALF, TOKENS)).permute((1, 2, 0)))
            g = gl.convert_layout(g, mma, assert_trivial=True)
            u = gl.convert_layout(u, mma, assert_trivial=True)
            h = _activate(g, u, b_ptr + e64 * stride_be, g_rows[:, None], u_rows[:, None], limit, ACT, HAS_BIAS)
            s_out = gl.convert_layout(slots, gl.SliceLayout(0, mma))
            ok_out = gl.convert_layout(ok, gl.SliceLayout(0, mma))
            gl.store(h_ptr + s_out[None, :] * stride_hm + cols[:, None], h, mask=(cols < I)[:, None] & ok_out[None, :])


@gluon.jit
def _moe_mma2(a_ptr, w_ptr, s_ptr, b_ptr, out_ptr, tw_ptr, ids_ptr, T, N, KI, E,
              stride_am, stride_we, stride_wn, stride_se, stride_sn, stride_be, stride_om,
              HAS_BIAS: gl.constexpr, T_PAD: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
              G: gl.constexpr):
    """out[slot] = (a[slot] @ deq(w2[e]).T + b2) * topk_weight for BLOCK_N output columns, 8 slots a pass."""
    mma: gl.constexpr = _mma_layout(gl.num_warps())
    pid_m = gl.program_id(0)
    e, owns, match, rank, count = _owner_slots(ids_ptr, pid_m, T, E, T_PAD)
    if owns:
        e64 = e.to(gl.int64)
        t0, t1, t2, t3, t4 = _tables(KI)
        cols = gl.program_id(1) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, mma))
        safe = gl.where(cols < N, cols, 0)
        for c in range(0, count, TOKENS):
            slots, ok = _chunk_slots(match, rank, count, c, T_PAD)
            acc = _dot_rows(w_ptr + e64 * (stride_we // 4), s_ptr + e64 * stride_se, safe, a_ptr, slots, stride_wn,
                            stride_sn, stride_am, KI // 32, t0, t1, t2, t3, t4, G, BLOCK_K // 32, BLOCK_N)
            s_out = gl.convert_layout(slots, gl.SliceLayout(0, mma))
            ok_out = gl.convert_layout(ok, gl.SliceLayout(0, mma))
            if HAS_BIAS:
                acc += gl.load(b_ptr + e64 * stride_be + safe)[:, None]
            acc = acc * gl.load(tw_ptr + s_out)[None, :]
            gl.store(out_ptr + s_out[None, :] * stride_om + cols[:, None], acc,
                     mask=(cols < N)[:, None] & ok_out[None, :])
