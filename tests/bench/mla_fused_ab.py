"""FlashMLA's split-KV merge two ways, side by side: the combine kernel chained with PDL (COMBINE "launch",
the sm_90 default) against the last split program of each row merging the partials itself (COMBINE "fused").

``python3 tests/bench/mla_fused_ab.py [--rounds 3] [--batches 1,8,64,256] [--models "V4-Flash TP8,V3.2 TP8"]``:
at each B and split count near the tuned ones, both configs run on the same inputs: time
(``bench_flash_mla.graph_time``, interleaved, best of ``--rounds``), rel_error against ``sparse_decode_ref``
(out and lse), and how far fused is from launch (rel_error; they merge the same fp32 partials). The
tiling is the runtime default's (V4-Flash: H_TILE 8, BLOCK_T 32; V3.2: H_TILE 16, BLOCK_T 16) and, for
V4-Flash, H_TILE 8 at BLOCK_T 16. A plain script; BENCHMARKS.md, FlashMLA, twenty-first session.
"""
from __future__ import annotations

import argparse

import torch
from bench_flash_mla import MODELS, copy_bandwidth, graph_time, input_sets

from aotune.kernels import rel_error
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem, sparse_decode, sparse_decode_ref

SPLITS = {1: (8, 16, 32), 8: (4, 8, 16), 64: (2, 4, 8), 256: (1, 2)}
TILINGS = {"V4-Flash TP8": [(8, 32), (8, 16)], "V3.2 TP8": [(16, 16)]}


def config(h_tile: int, block_t: int, splits: int, combine: str) -> dict:
    pdl = int(combine == "launch" and splits > 1 and torch.cuda.get_device_capability() >= (9, 0))
    return dict(PATH="mma", BLOCK_T=block_t, H_TILE=h_tile, NUM_SPLITS=splits, num_warps=4, num_stages=1, PDL=pdl,
                COMBINE=combine if splits > 1 else "launch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="V4-Flash TP8,V3.2 TP8")
    parser.add_argument("--batches", default="1,8,64,256", help="comma-separated B values (of 1, 8, 64, 256)")
    args = parser.parse_args()
    bw = copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()}; copy {bw / 1e12:.2f} TB/s")
    print("| model | B | H_TILE BLOCK_T | splits | launch+PDL us | fused us | fused/launch | fused err | "
          "fused vs launch | roofline us |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            problem = SparseDecodeProblem(B=batch, **MODELS[model])
            sets = input_sets(problem)
            ref = sparse_decode_ref(**sets[0])
            roof = KERNEL.cost(problem).bytes / bw
            for h_tile, block_t in TILINGS[model]:
                for splits in SPLITS[batch]:
                    configs = [config(h_tile, block_t, splits, c) for c in ("launch", "fused")]
                    if KERNEL.space.check(configs[1], problem) is not None:
                        continue
                    (out_l, lse_l), (out_f, lse_f) = [sparse_decode(**sets[0], config=c) for c in configs]
                    err = max(rel_error(out_f, ref[0]), rel_error(lse_f, ref[1]))
                    apart = max(rel_error(out_f, out_l), rel_error(lse_f, lse_l))
                    times = [float("inf")] * 2
                    for _ in range(args.rounds):
                        for i, c in enumerate(configs):
                            times[i] = min(times[i], graph_time(sets, c))
                    print(f"| {model} | {batch} | {h_tile} {block_t} | {splits} | {times[0] * 1e6:.1f} | "
                          f"{times[1] * 1e6:.1f} | {times[1] / times[0]:.2f} | {err:.1e} | {apart:.1e} | "
                          f"{roof * 1e6:.1f} |", flush=True)
            del sets
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
