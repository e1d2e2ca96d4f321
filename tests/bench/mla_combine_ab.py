"""The FlashMLA combine, old against new, on one GPU (a plain script; BENCHMARKS.md, FlashMLA, fifteenth session).

``python3 tests/bench/mla_combine_ab.py``: for V3.2 and V4-Flash TP 8 at B = 1, 8 and 64 with the split counts
the sweep picks there (mma, BLOCK_T 16), the call timed with the landed combine (a two-pass merge) and with
the online merge it replaced (kept below, as it was before commit de77945), interleaved, best of 3 rounds
of ``bench_flash_mla.graph_time``; both outputs are checked against ``sparse_decode_ref``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from bench_flash_mla import MODELS, input_sets
from mla_variants import header, interleaved, row

from aotune.kernels import flash_mla
from aotune.kernels.flash_mla import SparseDecodeProblem, sparse_decode_ref

SPLITS = {("V3.2 TP8", 1): 64, ("V3.2 TP8", 8): 16, ("V3.2 TP8", 64): 4,
          ("V4-Flash TP8", 1): 32, ("V4-Flash TP8", 8): 16, ("V4-Flash TP8", 64): 4}


@triton.jit
def online_combine_kernel(
    part_o_ptr, part_lse_ptr, sink_ptr, out_ptr, lse_ptr, S_q, H,
    NUM_SPLITS: tl.constexpr, CB: tl.constexpr, HAS_SINK: tl.constexpr, LONELY_POS: tl.constexpr,
):
    """``mla_combine_kernel`` before commit de77945: the splits merged online (a running max and rescale)."""
    row = tl.program_id(0)
    head = tl.program_id(1)
    cols = tl.program_id(2) * CB + tl.arange(0, CB)
    prow = row.to(tl.int64) * NUM_SPLITS * H + head  # split k of this (row, head) is partial row prow + k * H
    m = tl.full((), float("-inf"), tl.float32)
    total = tl.zeros((), tl.float32)
    o = tl.zeros((CB,), tl.float32)
    for k in tl.static_range(NUM_SPLITS):  # online merge in exp2 space; a split without tokens has lse -inf
        part = tl.load(part_o_ptr + (prow + k * H) * 512 + cols)
        lse_k = tl.load(part_lse_ptr + prow + k * H)
        m_new = tl.maximum(m, lse_k)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        rescale = tl.exp2(m - m_use)
        w = tl.exp2(lse_k - m_use)
        total = total * rescale + w
        o = o * rescale + w * part
        m = m_new
    m_safe = tl.where(m == float("-inf"), 0.0, m)
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


def main() -> None:
    kernels = {"two-pass": flash_mla.mla_combine_kernel, "online": online_combine_kernel}
    print(f"device {torch.cuda.get_device_name()}")
    print(header(list(kernels)), flush=True)
    for (model, batch), splits in SPLITS.items():
        sets = input_sets(SparseDecodeProblem(B=batch, **MODELS[model]))
        ref = sparse_decode_ref(**sets[0])
        config = dict(PATH="mma", BLOCK_T=16, H_TILE=16, NUM_SPLITS=splits, num_warps=4, num_stages=1)
        times, errors = interleaved(kernels, "mla_combine_kernel", sets, config, ref, 3)
        print(row(model, batch, splits, times, errors), flush=True)
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
