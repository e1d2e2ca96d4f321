"""DOWN_TILES A/B: the mma path's second GEMM with 1, 2, 4 or 8 row tiles per program (a plain script;
BENCHMARKS.md, MoE, nineteenth session).

``python3 tests/bench/moe_down_tiles_ab.py``: for DeepSeek-V4-Flash TP 8 (I = 256: one BLOCK_K step per
second-GEMM tile) at M = 1, 8, 32, 128 and TP 1 at M = 8, 32, each of a few mma tiles (BLOCK_N, warps,
first-GEMM SPLIT_K; BLOCK_K 256, PDL 1 on sm_90+) runs with every valid DOWN_TILES on the same rotated weight
sets (``bench_mxfp4_moe.time_config``: CUDA graph, median of 10 replays, best of 3 rounds interleaved over the
DOWN_TILES values). Prints the time, the active experts' bytes over the measured copy bandwidth, and the
output's relative error against ``fused_moe_ref``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_mxfp4_moe as bench  # noqa: E402
from aotune.kernels import rel_error  # noqa: E402
from aotune.kernels.mxfp4_moe import SPACE, MoEProblem, fused_moe, fused_moe_ref  # noqa: E402

ROWS = [("dsv4-flash-tp8", 1), ("dsv4-flash-tp8", 8), ("dsv4-flash-tp8", 32), ("dsv4-flash-tp8", 128),
        ("dsv4-flash-tp1", 8), ("dsv4-flash-tp1", 32)]
TILES = [(32, 1, 1), (32, 1, 2), (64, 2, 2), (128, 4, 1), (128, 4, 2)]  # (BLOCK_N, num_warps, SPLIT_K)


def configs(p: MoEProblem, pdl: int) -> list[list[dict]]:
    """Per tile, its valid configs with DOWN_TILES 1, 2, 4, 8."""
    out = []
    for bn, warps, split in TILES:
        base = dict(PATH="mma", BLOCK_M=8, BLOCK_N=bn, BLOCK_K=256, GROUP_M=1, SPLIT_K=split, DEQ="group_asm",
                    num_warps=warps, num_stages=1, PDL=pdl)
        group = [dict(base, DOWN_TILES=t) for t in (1, 2, 4, 8) if SPACE.check(dict(base, DOWN_TILES=t), p) is None]
        if len(group) > 1:
            out.append(group)
    return out


def main() -> None:
    copy_bw = bench.copy_bandwidth()
    pdl = int(torch.cuda.get_device_capability() >= (9, 0))
    print(f"# {torch.cuda.get_device_name()}; copy {copy_bw / 1e12:.2f} TB/s; PDL {pdl}", flush=True)
    plans = {(name, m): configs(MoEProblem(M=m, **bench.MODELS[name]), pdl) for name, m in ROWS}
    jobs = [(MoEProblem(M=m, **bench.MODELS[name]).to_dict(), c) for (name, m), groups in plans.items()
            for group in groups for c in group]
    statuses = bench.precompile(jobs)
    print(f"# precompiled {len(jobs)}: {sum(s == 'ok' for s in statuses)} ok", flush=True)
    print("| model | M | BLOCK_N / warps / SPLIT_K | DOWN_TILES 1 (us) | 2 | 4 | 8 | best / 1 | BW frac best "
          "| rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, m), groups in plans.items():
        p = MoEProblem(M=m, **bench.MODELS[name])
        sets = bench._sets(p, bench.rotated_sets(p), seed=m)
        active = bench.active_bytes(p, sets)
        ref = fused_moe_ref(**sets[0])
        for group in groups:
            times = {c["DOWN_TILES"]: float("inf") for c in group}
            for _ in range(3):
                for c in group:
                    times[c["DOWN_TILES"]] = min(times[c["DOWN_TILES"]], bench.time_config(sets, c, 10))
            err = max(rel_error(fused_moe(**sets[0], config=c), ref) for c in group)
            best = min(times.values())
            cells = " | ".join(f"{times[t]:.1f}" if t in times else "-" for t in (1, 2, 4, 8))
            c = group[0]
            print(f"| {name} | {m} | {c['BLOCK_N']} / {c['num_warps']} / {c['SPLIT_K']} | {cells} | "
                  f"{best / times[1]:.3f} | {active / (best * 1e-6) / copy_bw:.2f} | {err:.1e} |", flush=True)
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
