"""Benchmark of paged_mqa_logits (DeepSeek-V3.2 indexer: H 64, D 128, page 64, N 1) on one GPU.

Prints the device's copy bandwidth and bf16 matmul rate, then per (B, context): the best time over a
hand-picked subset of the config space ("tuned" until the tuner sweeps it), the space default
(untuned), the PyTorch reference, and KV bytes read (B * ctx * (D + 4)) over time as a fraction of
copy bandwidth. Kernel times are CUDA-graph replays of R launches over R input sets (pages randomly
permuted, every context = the context) with R chosen so the sets exceed 4x the L2; median of 20.
Run: ``python3 tests/bench/bench_mqa_logits.py``.
"""
from __future__ import annotations

import statistics
import sys

import torch

from aotune.kernels import config_key, rel_error
from aotune.kernels import mqa_logits as mq
from aotune.kernels.formats.index_kv import pack_index_kv

H, D, PS = 64, 128, 64
SHAPES = [(b, c) for c in (8192, 32768, 131072) for b in (1, 16, 64)]
DEFAULT = dict(mq.SPACE.default)
SWEEP = list({config_key(c): c for c in [DEFAULT] + [
    dict(BLOCK_N=bn, BLOCK_H=bh, TILES_PER_PROG=t, DOT="fp8", num_warps=w, num_stages=s)
    for bn, bh, w in ((32, 64, 4), (64, 64, 4), (64, 32, 4), (128, 64, 4), (128, 64, 8), (128, 32, 4), (256, 64, 8))
    for t in (1, 4, 16) for s in (2, 3, 4)
]}.values())


def _short(c: dict) -> str:
    return f"{c['BLOCK_N']}/{c['BLOCK_H']}/{c['TILES_PER_PROG']}/w{c['num_warps']}/s{c['num_stages']}"


def _events_ms(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def roofline() -> tuple[float, float]:
    """(copy bandwidth GB/s counting bytes read + written, bf16 matmul TFLOP/s)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy_ms = statistics.median(_events_ms(lambda: dst.copy_(src), 20))
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    a @ b
    mm_ms = statistics.median(_events_ms(lambda: a @ b, 20))
    return 2 * src.numel() / copy_ms / 1e6, 2 * 8192 ** 3 / mm_ms / 1e9


def input_sets(B: int, ctx: int, gen: torch.Generator) -> list[dict]:
    """R input sets over one cache of R*B*ctx tokens, each block table a random permutation of pages."""
    blocks = ctx // PS
    kv_bytes = B * ctx * (D + 4)
    R = max(1, -(-200_000_000 // kv_bytes))
    pages = R * B * blocks
    step = (1 << 20) // PS
    cache = torch.cat([pack_index_kv(torch.randn(min(step, pages - p) * PS, D, device="cuda", generator=gen), PS)
                       for p in range(0, pages, step)])
    perm = torch.randperm(pages, device="cuda", generator=gen).to(torch.int32).view(R, B, blocks)
    lens = torch.full((B,), ctx, dtype=torch.int32, device="cuda")
    return [{"q": torch.randn(B, 1, H, D, device="cuda", generator=gen).to(torch.float8_e4m3fn),
             "kv_cache": cache, "weights": torch.randn(B, H, device="cuda", generator=gen) / 8,
             "context_lens": lens, "block_table": perm[r].contiguous(), "max_context_len": ctx, "page_size": PS}
            for r in range(R)]


def time_config(sets: list[dict], config: dict) -> float:
    """Median ms per launch of a CUDA graph replaying one launch per input set."""
    for inp in sets[:1]:
        mq.paged_mqa_logits(**inp, config=config)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for inp in sets:
            mq.paged_mqa_logits(**inp, config=config)
    graph.replay()
    ms = statistics.median(_events_ms(graph.replay, 20)) / len(sets)
    del graph
    return ms


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name()
    copy_bw, tflops = roofline()
    print(f"device: {name}; torch {torch.__version__}")
    print(f"copy bandwidth (read+write): {copy_bw:.0f} GB/s; bf16 matmul 8192^3: {tflops:.0f} TFLOP/s")
    print("| B | context | KV MB | tuned us | untuned us | torch ref us | tuned GB/s (% copy) | untuned % copy "
          "| best config | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gen = torch.Generator(device="cuda").manual_seed(0)
    podium = []
    for B, ctx in SHAPES:
        sets = input_sets(B, ctx, gen)
        times = {}
        for config in SWEEP:
            try:
                times[config_key(config)] = (time_config(sets, config), config)
            except Exception as exc:  # noqa: BLE001 - a failing config is reported, not fatal
                print(f"  config {config} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        best_ms, best = min(times.values(), key=lambda v: v[0])
        ranked = sorted(times.values(), key=lambda v: v[0])[:3]
        podium.append((B, ctx, [(round(ms * 1e3, 1), _short(c)) for ms, c in ranked]))
        untuned_ms = times[config_key(DEFAULT)][0] if config_key(DEFAULT) in times else float("nan")
        ref_ms = statistics.median(_events_ms(lambda: mq.paged_mqa_logits_ref(**sets[0]), 3))
        err = rel_error(mq.paged_mqa_logits(**sets[0], config=best), mq.paged_mqa_logits_ref(**sets[0]))
        kv_bytes = B * ctx * (D + 4)
        bw = kv_bytes / best_ms / 1e6
        print(f"| {B} | {ctx} | {kv_bytes / 1e6:.1f} | {best_ms * 1e3:.1f} | {untuned_ms * 1e3:.1f} | "
              f"{ref_ms * 1e3:.0f} | {bw:.0f} ({100 * bw / copy_bw:.0f}%) | "
              f"{100 * kv_bytes / untuned_ms / 1e6 / copy_bw:.0f}% | {_short(best)} | {err:.1e} |", flush=True)
        del sets
        torch.cuda.empty_cache()
    print(f"best config = BLOCK_N/BLOCK_H/TILES_PER_PROG/num_warps/num_stages, DOT=fp8; {len(SWEEP)} configs swept; "
          f"untuned = space default {_short(DEFAULT)}")
    for B, ctx, top in podium:
        print(f"top 3 at B={B} ctx={ctx}: {top}")


if __name__ == "__main__":
    main()
