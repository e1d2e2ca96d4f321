"""The floor of FlashMLA sparse decode: what reading its bytes alone costs (plain script, not a test).

For V3.2 and V4-Flash TP 8 at B = 1, 8, 64, 256 (the inputs of ``make_inputs``, the sets of
``bench_flash_mla.input_sets``), the best pure gather of exactly the bytes ``sparse_decode`` reads, through
the same ids (main cache, then the extra cache; v32: each token's 656-byte row; v4: its 576 value and rope
bytes and, elsewhere in the page, its 8 scale bytes; an id of -1 reads nothing), in one launch and followed
by one dependent tiny launch (split pass + combine), swept over tile, splits, warps and stages; next to the
runtime default's time and the roofline of the issue (the larger of the KV bytes over copy bandwidth and the
FLOPs over bf16 matmul throughput, ``KERNEL.cost``). It tells which of the issue's goals a gathering kernel
can reach at all: at B = 1 it could not (fifth session: V3.2 B = 1's gather alone took 3.2 us on the H200,
the goal 1.3 us), and V4-Flash B = 64 (46%, 18.2 us against 8.3 us of roofline on the H100) was never
measured against its floor.

Usage on a GPU: ``python3 tests/bench/bench_mla_floor.py [--batches 1,8,64,256]``. On the CPU,
``TRITON_INTERPRET=1 python3 tests/bench/bench_mla_floor.py --check`` checks the gather's addressing against
a torch gather of the same bytes (tiny shapes, both layouts).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).parent))
from bench_flash_mla import MODELS, _events, copy_bandwidth, graph_time, input_sets, launch_floor, matmul_flops  # noqa: E402
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem  # noqa: E402

ROW_WORDS = {"v32": 164, "v4": 144}  # 4-byte words of a token's row (v4: values and rope; scales elsewhere)


@triton.jit
def gather_kernel(cache, idx_ptr, xcache, xidx_ptr, out_ptr, T, TX, n_tok, x_n_tok, page_words, x_page_words,
                  SPLITS, LAYOUT: tl.constexpr, PAGE: tl.constexpr, BT: tl.constexpr, STAGES: tl.constexpr):
    """XOR of the words of every token one (row, split) reads: positions 0 .. T - 1 of the main cache, then
    T .. T + TX - 1 of the extra one, split in whole tiles of BT as the kernel splits them."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    tiles = tl.cdiv(T, BT) + tl.cdiv(TX, BT)
    per = tl.cdiv(tiles, SPLITS)
    lo = split * per
    hi = tl.minimum(lo + per, tiles)
    RW: tl.constexpr = 164 if LAYOUT == 0 else 144
    cols = tl.arange(0, 256)
    pair = tl.arange(0, 2)
    acc = tl.zeros([BT, 256], tl.int32)
    acc_s = tl.zeros([BT, 2], tl.int32)
    tiles_main = tl.cdiv(T, BT)
    for tile in tl.range(lo, hi, num_stages=STAGES):
        main = tile < tiles_main
        offs = tl.where(main, tile, tile - tiles_main) * BT + tl.arange(0, BT)
        if main:
            ids = tl.load(idx_ptr + row.to(tl.int64) * T + offs, mask=offs < T, other=-1)
            words = cache.to(tl.pointer_type(tl.int32), bitcast=True)
            n, pw = n_tok, page_words
        else:
            ids = tl.load(xidx_ptr + row.to(tl.int64) * TX + offs, mask=offs < TX, other=-1)
            words = xcache.to(tl.pointer_type(tl.int32), bitcast=True)
            n, pw = x_n_tok, x_page_words
        valid = (ids >= 0) & (ids < n)
        t = tl.where(valid, ids, 0).to(tl.int64)
        if LAYOUT == 0:
            base = tl.multiple_of(t * RW, 4)
        else:
            page = (t // PAGE) * pw
            base = tl.multiple_of(page + (t % PAGE) * RW, 16)
            sbase = page + PAGE * RW + (t % PAGE) * 2
            acc_s ^= tl.load(words + sbase[:, None] + pair[None, :], mask=valid[:, None], other=0)
        acc ^= tl.load(words + base[:, None] + cols[None, :], mask=valid[:, None] & (cols < RW)[None, :], other=0)
    out = out_ptr + (row * SPLITS + split) * 258
    tl.store(out + cols, tl.xor_sum(acc, 0))
    tl.store(out + 256 + pair, tl.xor_sum(acc_s, 0))


@triton.jit
def touch_kernel(ptr):
    """The combine's stand-in: one dependent launch that reads a word the gather wrote."""
    tl.store(ptr, tl.load(ptr) + 1)


def _page_words(cache: torch.Tensor, layout: str) -> int:
    """The page stride in 4-byte words (v32 caches are token rows: no pages)."""
    return cache.stride(0) // 4 if layout == "v4" else 0


def gather(inputs: dict[str, Any], out: torch.Tensor, bt: int, splits: int, warps: int, stages: int,
           second: bool) -> None:
    """One gather of ``inputs``' bytes (and, with ``second``, one dependent tiny launch after it)."""
    idx = inputs["indices"]
    B, S_q, T = idx.shape
    layout, cache = inputs["layout"], inputs["kv_cache"]
    xcache, xidx = inputs.get("extra_kv_cache", cache), inputs.get("extra_indices")
    TX = xidx.shape[-1] if xidx is not None else 0
    token = 656 if layout == "v32" else 584
    gather_kernel[(B * S_q, splits)](
        cache, idx, xcache, xidx if xidx is not None else idx, out, T, TX, cache.numel() // token,
        xcache.numel() // token, _page_words(cache, layout), _page_words(xcache, layout), splits,
        LAYOUT=0 if layout == "v32" else 1, PAGE=inputs["page_size"], BT=bt, STAGES=stages, num_warps=warps)
    if second:
        touch_kernel[(1,)](out)


def gather_time(sets: list[dict[str, Any]], bt: int, splits: int, warps: int, stages: int, second: bool) -> float:
    """Median seconds of one gather (CUDA-graph replays of one per input set)."""
    B, S_q, _ = sets[0]["indices"].shape
    out = torch.empty(B * S_q * splits * 258, dtype=torch.int32, device="cuda")
    for inputs in sets[:2]:
        gather(inputs, out, bt, splits, warps, stages, second)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for inputs in sets:
                gather(inputs, out, bt, splits, warps, stages, second)
    torch.cuda.synchronize()
    graph.replay()
    return sorted(_events(graph.replay, 11))[5] * 1e-3 / len(sets)


def reference_words(inputs: dict[str, Any]) -> list[torch.Tensor]:
    """Per (row): the XOR of the words each valid token of the row reads (rows [256] and scales [2])."""
    layout, page = inputs["layout"], inputs["page_size"]
    out = []
    for r in range(inputs["indices"].shape[0] * inputs["indices"].shape[1]):
        acc, acc_s = torch.zeros(256, dtype=torch.int32), torch.zeros(2, dtype=torch.int32)
        for key_c, key_i in (("kv_cache", "indices"), ("extra_kv_cache", "extra_indices")):
            if key_i not in inputs:
                continue
            cache = inputs[key_c]
            words = cache.flatten().view(torch.int32)
            for t in inputs[key_i].flatten(0, 1)[r].tolist():
                n_tok = cache.numel() // (656 if layout == "v32" else 584)
                if not 0 <= t < n_tok:
                    continue
                rw = ROW_WORDS[layout]
                if layout == "v32":
                    base = t * rw
                else:
                    start = (t // page) * _page_words(cache, layout)
                    base = start + (t % page) * rw
                    acc_s ^= words[start + page * rw + (t % page) * 2:][:2]
                acc[:rw] ^= words[base:base + rw]
        out.append(torch.cat([acc, acc_s]))
    return out


def check() -> None:
    """The gather's words against ``reference_words`` on tiny inputs of both layouts (CPU interpreter)."""
    for fields in (dict(S_q=2, H=4, topk=40, layout="v32", page_size=16),
                   dict(S_q=1, H=4, topk=40, layout="v4", page_size=16, extra_topk=24)):
        problem = SparseDecodeProblem(B=3, **fields)
        inputs = KERNEL.make_inputs(problem, 0, "cpu")
        inputs["indices"][0, 0, :5] = torch.tensor([-1, 10 ** 6, 0, 3, -7])  # masked and out-of-range ids
        rows = inputs["indices"].shape[0] * inputs["indices"].shape[1]
        for bt, splits in ((16, 1), (8, 3)):
            out = torch.zeros(rows * splits * 258, dtype=torch.int32)
            gather(inputs, out, bt, splits, 4, 1, False)
            got = out.view(rows, splits, 258)
            for r, want in enumerate(reference_words(inputs)):
                merged = got[r, 0].clone()
                for s in range(1, splits):
                    merged ^= got[r, s]
                assert torch.equal(merged, want), (fields["layout"], bt, splits, r)
        print(f"gather addressing of {fields['layout']} checked against torch", flush=True)


def main(batches: list[int]) -> None:
    bw, flops = copy_bandwidth(), matmul_flops()
    one, two = launch_floor()
    print(f"device {torch.cuda.get_device_name()}; copy {bw / 1e12:.2f} TB/s; bf16 matmul {flops / 1e12:.0f} TFLOP/s;"
          f" launch floor (CUDA graph) 1 / 2 tiny kernels {one * 1e6:.2f} / {two * 1e6:.2f} us", flush=True)
    print("| model | B | roofline us | gather, 1 launch us (% of roofline) | BT/splits/warps/stages | gather + 1 "
          "launch us (%) | runtime default us (%) | default / gather+1 |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, fields), batch in itertools.product(MODELS.items(), batches):
        problem = SparseDecodeProblem(B=batch, **fields)
        cost = KERNEL.cost(problem)
        roof = max(cost.bytes / bw, cost.flops / flops)
        sets = input_sets(problem)
        rows = batch * problem.S_q
        splits_options = [s for s in (1, 2, 4, 8, 16, 32, 64, 128) if rows * s <= 4096]
        timed = []
        for bt, splits, warps, stages in itertools.product((16, 32), splits_options, (4, 8), (1, 3)):
            try:
                timed.append((gather_time(sets, bt, splits, warps, stages, False), (bt, splits, warps, stages)))
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                print(f"  gather {bt}/{splits}/{warps}/{stages} failed: {type(exc).__name__}: {str(exc)[:100]}")
        one_launch, grid = min(timed)
        two_launches = min(gather_time(sets, *g, True) for _, g in sorted(timed)[:3])
        default = graph_time(sets, None)
        print(f"| {name} | {batch} | {roof * 1e6:.1f} | {one_launch * 1e6:.1f} ({roof / one_launch:.0%}) | "
              f"{'/'.join(map(str, grid))} | {two_launches * 1e6:.1f} ({roof / two_launches:.0%}) | "
              f"{default * 1e6:.1f} ({roof / default:.0%}) | {default / two_launches:.2f} |", flush=True)
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument("--check", action="store_true", help="check the gather on the CPU interpreter and stop")
    args = parser.parse_args()
    if args.check:
        check()
    else:
        main([int(b) for b in args.batches.split(",")])
