"""FlashMLA's untuned default on one GPU against every split count of the same tile (a plain script).

For V3.2 and V4-Flash TP 8 (``bench_flash_mla.MODELS``) at each B of ``--batches`` it times the mma path at
BLOCK_T 16 (the runtime default's tile) with every split count the space allows, the Triton space default,
and what ``runtime_default`` picks on this GPU; same timing as ``bench_flash_mla.py`` (CUDA-graph replays
over rotating input sets, median). One markdown row per shape, the fastest split in bold. Usage:
``python3 tests/bench/bench_mla_defaults.py [--batches 1,2,4,8,16,32,64]``.
"""
from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, "tests/bench")
from bench_flash_mla import MODELS, graph_time, input_sets, precompile  # noqa: E402

from aotune.kernels._mla_space import _MMA_DEFAULT, runtime_default  # noqa: E402
from aotune.kernels.device import device_class  # noqa: E402
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem  # noqa: E402

SPLITS = (1, 2, 4, 8, 16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    args = parser.parse_args()
    device = device_class(None)
    batches = [int(b) for b in args.batches.split(",")]
    candidates = [dict(_MMA_DEFAULT, NUM_SPLITS=s) for s in SPLITS]
    for fields in MODELS.values():
        precompile(fields, candidates + [dict(KERNEL.space.default)])
    print(f"# {device.key}")
    print("| model | B | " + " | ".join(f"S={s}" for s in SPLITS) + " | triton default | runtime_default picks |")
    print("|---|---|" + "---|" * (len(SPLITS) + 2))
    for (name, fields), batch in ((m, b) for m in MODELS.items() for b in batches):
        problem = SparseDecodeProblem(B=batch, **fields)
        sets = input_sets(problem)
        times = {s: graph_time(sets, c) * 1e6 for s, c in zip(SPLITS, candidates) if not KERNEL.space.check(c, problem)}
        space_default = graph_time(sets, dict(KERNEL.space.default)) * 1e6
        fastest = min(times, key=times.get)
        cells = [("**%.1f**" if s == fastest else "%.1f") % times[s] if s in times else "-" for s in SPLITS]
        picked = runtime_default(problem, device)
        label = f"mma S={picked['NUM_SPLITS']}" if picked else "triton default"
        print(f"| {name} | {batch} | " + " | ".join(cells) + f" | {space_default:.1f} | {label} |", flush=True)
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
