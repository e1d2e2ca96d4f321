"""The B = 1 floor of FlashMLA decode (plain script; BENCHMARKS.md, fifth session).

The launch floor (CUDA-graph replays of empty kernels) and the best pure gather of V3.2 TP8 B=1's bytes
(``bench_mla_gather.gather_time``: 2048 random 656-byte rows through the ids of ``make_inputs``).
Usage on a GPU: ``python3 tests/bench/bench_mla_floor.py``.
"""
import sys, torch
sys.path.insert(0, "tests/bench")
from bench_flash_mla import MODELS, launch_floor
from bench_mla_gather import gather_time
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem
print("launch floor 1/2 kernels (s)", launch_floor(), flush=True)
p = SparseDecodeProblem(B=1, **MODELS["V3.2 TP8"])
sets = [KERNEL.make_inputs(p, s, "cuda") for s in range(64)]
res = []
for bt in (16, 32, 64):
    for sp in (8, 16, 32, 64, 128):
        for st in (1, 3):
            res.append((gather_time(sets, bt, sp, 4, st), bt, sp, st))
res.sort()
print("B=1 V3.2 TP8 pure gather of 2048 x 656 B (1.34 MB), best 3 (us, BT, splits, stages):",
      [(round(t * 1e6, 2), *c) for t, *c in res[:3]], flush=True)
