"""The decode floor of the MXFP4 MoE: how fast can any kernel read the active experts' bytes?
(plain script, not a test; BENCHMARKS.md, MoE, seventeenth session)

For the issue's models at M = 1, 8, 32, with the routing and weight sets of ``bench_mxfp4_moe.py``
(random distinct experts per token, sets rotated so the weights are not in L2): the time of a Triton
kernel that only reads the bytes the BW column counts (weights, scales and biases of each distinct routed
expert, XOR-reduced so the loads cannot be dropped) and does no math, in one launch and split in two
dependent launches (the first GEMM's bytes, then the second's, as a two-GEMM MoE must), swept over chunk
size and warps; and the CUDA-graph launch floor of 1-4 empty kernels. The fraction printed is the issue's:
active bytes over time, over the measured copy bandwidth. A MoE call that reads these bytes cannot beat
the pure read of the same number of launches. Usage on a GPU: ``python3 tests/bench/bench_moe_floor.py``.
"""
from __future__ import annotations

import statistics
import sys

sys.path.insert(0, "tests/bench")
import torch
import triton
import triton.language as tl

from bench_mxfp4_moe import MODELS, _events_ms, _sets, copy_bandwidth, rotated_sets
from aotune.kernels.mxfp4_moe import MoEProblem, expert_weight_bytes


@triton.jit
def _read_part(acc, base, expert, words, offset, lo, hi, BLOCK: tl.constexpr):
    """XOR of the words [lo, hi) of this chunk that fall in one tensor (words ``offset``.. of the expert's)."""
    start = tl.maximum(lo, offset)
    stop = tl.minimum(hi, offset + words)
    ptr = base + expert.to(tl.int64) * words - offset
    for i in range(start, stop, BLOCK):
        cols = i + tl.arange(0, BLOCK)
        acc ^= tl.load(ptr + cols, mask=cols < stop, other=0)
    return acc


@triton.jit
def _read_experts(ids, out, a, b, c, d, e, f, na, nb, nc, nd, ne, nf, CHUNK: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Program (slot, chunk) reads words [chunk * CHUNK, +CHUNK) of expert ids[slot]'s six tensors, laid
    end to end (a tensor of 0 words per expert is skipped)."""
    slot = tl.program_id(0)
    lo = tl.program_id(1) * CHUNK
    hi = lo + CHUNK
    expert = tl.load(ids + slot)
    acc = tl.zeros([BLOCK], tl.int32)
    if expert >= 0:
        acc = _read_part(acc, a, expert, na, 0, lo, hi, BLOCK)
        acc = _read_part(acc, b, expert, nb, na, lo, hi, BLOCK)
        acc = _read_part(acc, c, expert, nc, na + nb, lo, hi, BLOCK)
        acc = _read_part(acc, d, expert, nd, na + nb + nc, lo, hi, BLOCK)
        acc = _read_part(acc, e, expert, ne, na + nb + nc + nd, lo, hi, BLOCK)
        acc = _read_part(acc, f, expert, nf, na + nb + nc + nd + ne, lo, hi, BLOCK)
    tl.store(out + slot * tl.num_programs(1) + tl.program_id(1), tl.xor_sum(acc, 0))


def _words(t: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """The tensor as flat int32 words, and its words per expert (0 words for a missing tensor)."""
    if t is None:
        return torch.zeros(1, dtype=torch.int32, device="cuda"), 0
    flat = t.contiguous().view(-1).view(torch.uint8)
    assert flat.numel() % (4 * t.shape[0]) == 0, t.shape
    return flat.view(torch.int32), flat.numel() // 4 // t.shape[0]


def _plan(s: dict) -> dict:
    """The distinct routed experts of one set (padded with -1 to M * top_k slots) and its six tensors."""
    ids = torch.unique(s["topk_ids"][s["topk_ids"] >= 0])
    slots = torch.full((s["topk_ids"].numel(),), -1, dtype=torch.int32, device="cuda")
    slots[: ids.numel()] = ids.to(torch.int32)
    parts = [_words(s.get(k)) for k in ("w13", "w13_scale", "w13_bias", "w2", "w2_scale", "w2_bias")]
    return dict(ids=slots, parts=parts)


def _launch(plan: dict, out: torch.Tensor, chunk: int, block: int, warps: int, which: slice) -> None:
    """One read launch over the parts ``which`` selects (the others get 0 words)."""
    tensors = [t for t, _ in plan["parts"]]
    words = [n if i in range(6)[which] else 0 for i, (_, n) in enumerate(plan["parts"])]
    chunks = triton.cdiv(sum(words), chunk)
    _read_experts[(plan["ids"].numel(), chunks)](plan["ids"], out, *tensors, *words, CHUNK=chunk, BLOCK=block,
                                                 num_warps=warps)


def read_time(plans: list[dict], chunk: int, block: int, warps: int, split: bool) -> float:
    """Microseconds per call: one read launch per set (or two, first GEMM's bytes then the second's), all
    sets in one CUDA graph, median of 11 replays."""
    out = torch.empty(1 << 20, dtype=torch.int32, device="cuda")
    pieces = [slice(0, 3), slice(3, 6)] if split else [slice(0, 6)]

    def calls() -> None:
        for plan in plans:
            for which in pieces:
                _launch(plan, out, chunk, block, warps, which)
    calls()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        calls()
    graph.replay()
    return statistics.median(_events_ms(graph.replay, 11)) * 1e3 / len(plans)


def launch_floor(max_kernels: int = 4) -> list[float]:
    """Microseconds per call of 1..max_kernels back-to-back tiny kernels, replayed in a CUDA graph."""
    x = torch.zeros(1, device="cuda")
    times = []
    for kernels in range(1, max_kernels + 1):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(100 * kernels):
                x.add_(1.0)
        graph.replay()
        times.append(statistics.median(_events_ms(graph.replay, 15)) * 1e3 / 100)
    return times


def main() -> None:
    copy_bw = copy_bandwidth()
    floors = launch_floor()
    print(f"# {torch.cuda.get_device_name()}  copy {copy_bw / 1e9:.0f} GB/s; launch floor of 1-4 kernels (us): "
          + ", ".join(f"{t:.2f}" for t in floors), flush=True)
    print("| model | M | active MB | at copy BW (us) | read, 1 launch (us) | frac | read, 2 launches (us) | frac "
          "| best 1-launch (CHUNK words, BLOCK, warps) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, fields in MODELS.items():
        for m in (1, 8, 32):
            p = MoEProblem(M=m, **fields)
            sets = _sets(p, rotated_sets(p), seed=p.M)
            plans = [_plan(s) for s in sets]
            active = statistics.mean(int((pl["ids"] >= 0).sum()) for pl in plans) * expert_weight_bytes(p)
            grid = [(ch, bl, w) for ch in (2048, 8192, 32768, 131072) for bl in (512, 1024, 2048) for w in (4, 8)
                    if bl <= ch]
            one = min((read_time(plans, *g, split=False), g) for g in grid)
            two = min(read_time(plans, *g, split=True) for g in grid)
            frac = lambda us: active / (us * 1e-6) / copy_bw  # noqa: E731
            print(f"| {name} | {m} | {active / 1e6:.1f} | {active / copy_bw * 1e6:.1f} | {one[0]:.1f} "
                  f"| {frac(one[0]):.2f} | {two:.1f} | {frac(two):.2f} | {one[1]} |", flush=True)
            del sets, plans
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
