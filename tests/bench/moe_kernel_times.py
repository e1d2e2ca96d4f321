"""Where a MoE decode call's time goes, launch by launch (a plain script; BENCHMARKS.md, MoE, nineteenth session).

``python3 tests/bench/moe_kernel_times.py [--probe]``: for each decode row of the issue's table at its tuned config (the
H100 table of the eighteenth session, PDL 0 so that launches do not overlap), the call runs eagerly over the
rotated weight sets of ``bench_mxfp4_moe`` (weights out of L2) under ``torch.profiler``; it prints each
kernel's mean device time, the weight bytes it reads (first GEMM: w13 of the routed experts; second: w2) and
those bytes over its time as a fraction of the measured copy bandwidth, and the whole call in a CUDA graph.
``--probe`` runs gpt-oss-120b's M = 8 / 32 rows instead, next to the same call with 3072 for its 2880 (K and I)
and / or DeepSeek's activation without biases (run in the twentieth session: 2880 takes as long as 3072), and
with 2816 and 2944 (twenty-second session): what keeps gpt-oss's GEMMs at 0.73-0.76 of copy bandwidth where V4-Flash
TP 1 reaches 0.87-0.89 with the same tiles (BENCHMARKS.md, MoE, twentieth session). ``--align`` runs gpt-oss's
M = 8 / 32 rows with its weights as given and again with every weight and scale row on a 128-byte pitch
(``formats.pad_rows``: a padded view, same values): 2816 and 2944 differ from 2880 in both the tail span and
the rows' alignment, this changes the alignment alone.
"""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
import bench_mxfp4_moe as bench  # noqa: E402
from aotune.kernels.formats import pad_rows  # noqa: E402
from aotune.kernels.mxfp4_moe import MoEProblem, fused_moe  # noqa: E402

_MMA = dict(PATH="mma", BLOCK_M=8, BLOCK_K=256, GROUP_M=1, DEQ="group_asm", num_stages=1)
_GEMV = dict(PATH="gemv", BLOCK_M=1, BLOCK_N=16, BLOCK_K=256, GROUP_M=1, SPLIT_K=1, DEQ="group_asm", num_warps=1,
             num_stages=3)
ROWS = [("dsv4-flash-tp1", 1, _GEMV), ("gpt-oss-120b-tp1", 1, _GEMV),
        ("dsv4-flash-tp8", 1, dict(_GEMV, BLOCK_K=512, num_warps=2, num_stages=2, SPLIT_K=4)),
        ("dsv4-flash-tp8", 8, dict(_MMA, BLOCK_N=32, num_warps=1, SPLIT_K=2)),
        ("dsv4-flash-tp8", 32, dict(_MMA, BLOCK_N=128, num_warps=4, SPLIT_K=2)),
        ("gpt-oss-120b-tp1", 8, dict(_MMA, BLOCK_N=32, num_warps=1, SPLIT_K=1)),
        ("gpt-oss-120b-tp1", 32, dict(_MMA, BLOCK_N=64, num_warps=2, SPLIT_K=1)),
        ("dsv4-flash-tp1", 8, dict(_MMA, BLOCK_N=32, num_warps=1, SPLIT_K=1))]
_OSS = bench.MODELS["gpt-oss-120b-tp1"]
_PLAIN = dict(K=2880, I=2880, E=128, top_k=4)  # DeepSeek's swiglu, gate_up halves, no biases
# 2816: 11 whole BLOCK_K 256 steps, rows 128-byte aligned; 2944: 11 steps and a whole 128-value span, rows 64
# bytes off a 128-byte line (which of the tail span and the row alignment costs 2880 its twelfth step)
PROBES = [(fields, m, config) for _, m, config in ROWS[5:7] for fields in
          (_OSS, dict(_OSS, K=3072, I=3072), _PLAIN, dict(_PLAIN, K=3072, I=3072), dict(_OSS, K=2816, I=2816),
           dict(_OSS, K=2944, I=2944))]
ALIGNED = [(_OSS, m, config, pitch) for _, m, config in ROWS[5:7] for pitch in (False, True)]


def align_weights(sets: list[dict]) -> None:
    """Every set's weights and scales as ``pad_rows`` views on a 128-byte pitch (in place)."""
    for s in sets:
        for name in ("w13", "w13_scale", "w2", "w2_scale"):
            s[name] = pad_rows(s[name], 128)


def gemm_bytes(p: MoEProblem, experts: float) -> tuple[float, float]:
    """Weight, scale and bias bytes of the first and the second GEMM over ``experts`` distinct experts."""
    w13 = 2 * p.I * (p.K // 2 + p.K // p.group_size) + (8 * p.I if p.has_bias else 0)
    w2 = p.K * (p.I // 2 + p.I // p.group_size) + (4 * p.K if p.has_bias else 0)
    return experts * w13, experts * w2


def kernel_times(sets: list[dict], config: dict, rounds: int = 5) -> dict[str, float]:
    """Mean device microseconds per call of each kernel name (eager calls, one per set per round)."""
    for s in sets:
        fused_moe(**s, config=config)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(rounds):
            for s in sets:
                fused_moe(**s, config=config)
        torch.cuda.synchronize()
    total: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            total[event.name[:60]] += event.device_time
    return {name: us / (rounds * len(sets)) for name, us in total.items()}


def main() -> None:
    copy_bw = bench.copy_bandwidth()
    print(f"# {torch.cuda.get_device_name()}; copy {copy_bw / 1e12:.2f} TB/s", flush=True)
    rows = ALIGNED if "--align" in sys.argv else PROBES if "--probe" in sys.argv else ROWS
    for model, m, config, *aligned in rows:
        p = MoEProblem(M=m, **(bench.MODELS[model] if isinstance(model, str) else model))
        sets = bench._sets(p, bench.rotated_sets(p), seed=m)
        if aligned and aligned[0]:
            before = fused_moe(**sets[0], config=config)
            align_weights(sets)
            same = torch.equal(before, fused_moe(**sets[0], config=config))
            print(f"\n# weight and scale rows on a 128-byte pitch (output bitwise as with the contiguous weights: "
                  f"{same})", end="")
        experts = bench.active_experts(sets)
        b1, b2 = gemm_bytes(p, experts)
        graph_us = bench.time_config(sets, config, 10)
        frac = (b1 + b2) / (graph_us * 1e-6) / copy_bw
        print(f"\n## {model} M={m} {config}\ncall in a CUDA graph {graph_us:.1f} us ({frac:.2f} of copy BW); "
              f"{experts:.1f} experts, GEMM1 {b1 / 1e6:.1f} MB, GEMM2 {b2 / 1e6:.1f} MB")
        for name, us in sorted(kernel_times(sets, config).items(), key=lambda kv: -kv[1]):
            mb = b1 if re.search(r"_(gemv|mma|gemm)1", name) else b2 if re.search(r"_(gemv|mma|gemm)2", name) else 0.0
            share = f"{mb / 1e6:.1f} MB, {mb / (us * 1e-6) / copy_bw:.2f} of copy BW" if mb else ""
            print(f"  {us:8.1f} us  {name}  {share}")
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
