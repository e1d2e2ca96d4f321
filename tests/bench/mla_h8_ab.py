"""The mma path's two head tilings side by side at DeepSeek-V4-Flash TP 8 (8 heads): 16 head rows, half of
them padding (``_mla_mma``, H_TILE 16) against the 8 heads as the MMA's N (``_mla_mma8``, H_TILE 8).

``python3 tests/bench/mla_h8_ab.py [--rounds 3] [--batches 1,8,64,256] [--variant FILE] [--ring]``: at each B, for the
split counts near the tuned ones, every config runs on the same inputs: its rel_error against
``sparse_decode_ref`` (out and lse) and its time (``bench_flash_mla.graph_time``, the configs interleaved, best
of ``--rounds``). PDL 1 where there are splits (sm_90+). Split counts 3 x 2^k are outside the space (for the
register cap's three programs per SM); a count over BLOCK_T 32's tiles runs as the largest power of two below
them. ``--variant``: a copy of ``kernels/_mla_mma8.py`` patched by ``mla_defer_pv.patch``, timed with its
DEFER_PV in one more column. ``--ring``: H_TILE 8 with its register loop against the shared-memory ring (config
num_stages 3, ``_mla_mma8._ring_loop``) instead. A plain script; BENCHMARKS.md, FlashMLA, twentieth and
twenty-second sessions.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from bench_flash_mla import MODELS, copy_bandwidth, graph_time, input_sets
from mla_sass_loops import load_variant

from aotune.kernels import flash_mla, rel_error
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem, sparse_decode, sparse_decode_ref

SPLITS = {1: (16, 32), 8: (8, 16), 64: (2, 4, 6, 8), 256: (1, 2, 3)}
# (name, H_TILE, BLOCK_T, options outside the space): "maxnreg" (Triton's register cap; 168 gives three programs
# per SM at H_TILE 8 BLOCK_T 16) and, with --variant, "variant" (that file's kernel) with its DEFER_PV
TILINGS = [("H16 BT16", 16, 16, {}), ("H8 BT16", 8, 16, {}), ("H8 BT32", 8, 32, {}),
           ("H8 BT16 r168", 8, 16, dict(maxnreg=168))]
VARIANT_TILINGS = [("H8 BT16 defer", 8, 16, dict(variant=True, DEFER_PV=True))]
RING_TILINGS = [("H8 BT16", 8, 16, {}), ("H8 BT32", 8, 32, {}), ("H8 BT16 ring", 8, 16, dict(num_stages=3)),
                ("H8 BT32 ring", 8, 32, dict(num_stages=3))]
_PLAN = flash_mla._plan
_VARIANT: list = []  # the --variant kernel


def _plan_with_options(*args: object) -> list:
    """``flash_mla._plan`` with the config's ``OPTIONS`` applied to the decode launch."""
    plan = _PLAN(*args)
    options = dict(args[-1].get("OPTIONS", {}))
    if options:
        launch, grid = plan[0]
        fn = _VARIANT[0] if options.pop("variant", False) else launch.fn
        plan[0] = (dataclasses.replace(launch, fn=fn, kwargs=dict(launch.kwargs, **options)), grid)
    return plan


def config(h_tile: int, block_t: int, splits: int, options: dict) -> dict:
    pdl = int(splits > 1 and torch.cuda.get_device_capability() >= (9, 0))
    options = dict(options)
    stages = options.pop("num_stages", 1)  # a config key, not a launch option
    out = dict(PATH="mma", BLOCK_T=block_t, H_TILE=h_tile, NUM_SPLITS=splits, num_warps=4, num_stages=stages,
               PDL=pdl)
    return dict(out, OPTIONS=options) if options else out


def tiles(problem: SparseDecodeProblem, block_t: int) -> int:
    return -(-problem.topk // block_t) + -(-problem.extra_topk // block_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="V4-Flash TP8", choices=sorted(MODELS))
    parser.add_argument("--batches", default="1,8,64,256", help="comma-separated B values (of 1, 8, 64, 256)")
    parser.add_argument("--variant", help="a copy of kernels/_mla_mma8.py patched by mla_defer_pv.patch: "
                        "adds its DEFER_PV column")
    parser.add_argument("--ring", action="store_true", help="H_TILE 8: the register loop against the ring")
    args = parser.parse_args()
    flash_mla._plan = _plan_with_options
    tilings = RING_TILINGS if args.ring else TILINGS
    if args.variant:
        _VARIANT.append(load_variant(args.variant, "mla_decode_mma8_kernel"))
        tilings = TILINGS + VARIANT_TILINGS
    print(f"device {torch.cuda.get_device_name()}; copy {copy_bandwidth() / 1e12:.2f} TB/s; {args.model}")
    print("| B | splits | " + " | ".join(f"{n} us" for n, *_ in tilings) + " | " +
          " | ".join(f"{n} err" for n, *_ in tilings) + " | roofline us |")
    print("|---|---|" + "---|" * (2 * len(tilings) + 1))
    bw = copy_bandwidth()
    for batch in map(int, args.batches.split(",")):
        split_counts = SPLITS[batch]
        problem = SparseDecodeProblem(B=batch, **MODELS[args.model])
        sets = input_sets(problem)
        ref = sparse_decode_ref(**sets[0])
        for splits in split_counts:
            # a split count over BLOCK_T 32's tile count runs as half of it there (the sweep's split counts)
            configs = [config(h, bt, min(splits, 1 << tiles(problem, bt).bit_length() - 1), options)
                       for _, h, bt, options in tilings]
            errors = []
            for c in configs:
                out, lse = sparse_decode(**sets[0], config=c)
                errors.append(max(rel_error(out, ref[0]), rel_error(lse, ref[1])))
            times = [float("inf")] * len(configs)
            for _ in range(args.rounds):
                for i, c in enumerate(configs):
                    times[i] = min(times[i], graph_time(sets, c))
            roof = KERNEL.cost(problem).bytes / bw
            print(f"| {batch} | {splits} | " + " | ".join(f"{t * 1e6:.1f}" for t in times) + " | " +
                  " | ".join(f"{e:.1e}" for e in errors) + f" | {roof * 1e6:.1f} |", flush=True)
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
