"""Is FlashMLA decode bound by its gather pattern? (plain script, not a test; BENCHMARKS.md, fourth session)

For DeepSeek-V3.2 TP 8 at B = 64 and 256 (the inputs of ``make_inputs``: random top-k token ids into a
paged 656-byte-per-token cache of 344 / 1376 MB): the time of ``sparse_decode`` at one config, of a
pure-gather Triton kernel that reads the same bytes through the same ids (swept over tile, splits, warps
and stages), and of ``torch.index_select`` on the same rows; each with the ids as given and sorted per
row. Usage on a GPU: ``python3 tests/bench/bench_mla_gather.py``.
"""
from __future__ import annotations
import math
import sys
import time
sys.path.insert(0, "tests/bench")
import torch
import triton
import triton.language as tl

from bench_flash_mla import MODELS, graph_time, copy_bandwidth, _events
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem, sparse_decode


@triton.jit
def gather_kernel(cache, idx_ptr, out_ptr, T, n_tok, ROW_WORDS: tl.constexpr, WP: tl.constexpr,
                  BT: tl.constexpr, SPLITS: tl.constexpr, STAGES: tl.constexpr):
    row = tl.program_id(0)
    split = tl.program_id(1)
    per = tl.cdiv(T, SPLITS * BT) * BT
    lo = split * per
    hi = tl.minimum(lo + per, T)
    acc = tl.zeros([BT, WP], tl.int32)
    words = cache.to(tl.pointer_type(tl.int32), bitcast=True)
    cols = tl.arange(0, WP)
    for t0 in tl.range(lo, hi, BT, num_stages=STAGES):
        offs = t0 + tl.arange(0, BT)
        idx = tl.load(idx_ptr + row.to(tl.int64) * T + offs, mask=offs < hi, other=-1)
        valid = (idx >= 0) & (idx < n_tok)
        base = tl.where(valid, idx, 0).to(tl.int64) * ROW_WORDS
        x = tl.load(words + base[:, None] + cols[None, :], mask=valid[:, None] & (cols < ROW_WORDS)[None, :], other=0)
        acc ^= x
    tl.store(out_ptr + (row * SPLITS + split) * WP + cols, tl.sum(acc, 0))


def gather_time(sets, bt, splits, warps, stages):
    idx0 = sets[0]["indices"]
    B, S_q, T = idx0.shape
    out = torch.empty(B * S_q * splits * 256, dtype=torch.int32, device="cuda")
    def call(s):
        c = s["kv_cache"]
        gather_kernel[(B * S_q, splits)](c, s["indices"], out, T, c.numel() // 656, ROW_WORDS=164, WP=256, BT=bt,
                                         SPLITS=splits, STAGES=stages, num_warps=warps)
    for s in sets[:2]:
        call(s)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=stream):
            for s in sets:
                call(s)
    torch.cuda.synchronize(); g.replay()
    return sorted(_events(g.replay, 11))[5] * 1e-3 / len(sets)


def torch_gather_time(sets):
    def call(s):
        flat = s["kv_cache"].view(-1, 656)
        idx = s["indices"].flatten().clamp_min(0).long()
        return flat.index_select(0, idx)
    for s in sets[:2]:
        call(s)
    ts = []
    for _ in range(5):
        torch.cuda.synchronize(); t = time.perf_counter()
        for s in sets:
            call(s)
        torch.cuda.synchronize(); ts.append((time.perf_counter() - t) / len(sets))
    return sorted(ts)[2]


def sorted_sets(sets):
    out = []
    for s in sets:
        s2 = dict(s)
        idx = s["indices"]
        top = torch.iinfo(torch.int32).max
        ordered = torch.sort(torch.where(idx < 0, top, idx), -1).values  # invalid ids (-1) last
        s2["indices"] = torch.where(ordered == top, -1, ordered).contiguous()
        out.append(s2)
    return out


def main():
    bw = copy_bandwidth()
    print(f"copy {bw/1e12:.2f} TB/s", flush=True)
    fields = MODELS["V3.2 TP8"]
    # The tuned configs of the fourth session's bench run (the run of this script used the old kernel's).
    best_cfg = {64: dict(BLOCK_T=64, H_TILE=16, NUM_SPLITS=2, num_warps=8, num_stages=3),
                256: dict(BLOCK_T=32, H_TILE=16, NUM_SPLITS=1, num_warps=4, num_stages=3)}
    for B in (64, 256):
        problem = SparseDecodeProblem(B=B, **fields)
        n_sets = max(2, min(128, math.ceil(150e6 / KERNEL.cost(problem).bytes)))
        sets = [KERNEL.make_inputs(problem, seed, "cuda") for seed in range(n_sets)]
        ssets = sorted_sets(sets)
        nbytes = B * 2048 * 656
        cache_mb = sets[0]["kv_cache"].numel() / 1e6
        print(f"== V3.2 B={B}: gathered {nbytes/1e6:.1f} MB per call, cache {cache_mb:.0f} MB, {n_sets} sets", flush=True)
        for name, ss in (("random", sets), ("sorted", ssets)):
            t = torch_gather_time(ss)
            print(f"  torch index_select {name}: {t*1e6:.1f} us = {nbytes/t/1e12:.2f} TB/s read", flush=True)
            t = graph_time(ss, best_cfg[B])
            print(f"  sparse_decode {best_cfg[B]} {name}: {t*1e6:.1f} us = {nbytes/t/1e12:.2f} TB/s", flush=True)
            res = []
            for bt in (16, 32, 64):
                for splits in ((4, 8, 16) if B == 64 else (1, 2, 4)):
                    for warps in (4, 8):
                        for st in (1, 3):
                            try:
                                t = gather_time(ss, bt, splits, warps, st)
                                res.append((t, bt, splits, warps, st))
                            except Exception as e:
                                print("   fail", bt, splits, warps, st, str(e)[:80])
            res.sort()
            for t, *c in res[:4]:
                print(f"  pure gather {name} BT/SPLITS/warps/stages {c}: {t*1e6:.1f} us = {nbytes/t/1e12:.2f} TB/s", flush=True)
            cfg = best_cfg[B]
            grid = (cfg["BLOCK_T"], cfg["NUM_SPLITS"], cfg["num_warps"], cfg["num_stages"])
            t = gather_time(ss, *grid)
            print(f"  pure gather {name} on the kernel's grid {list(grid)}: {t*1e6:.1f} us = {nbytes/t/1e12:.2f} TB/s")
        del sets, ssets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
