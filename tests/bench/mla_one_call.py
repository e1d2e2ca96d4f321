"""One FlashMLA call, repeated 4 times, for Nsight Compute (plain script; BENCHMARKS.md, fourth session).

``ncu -k regex:mla_decode --launch-skip 2 --launch-count 1 --section SpeedOfLight ... python3
tests/bench/mla_one_call.py B BLOCK_T WARPS``: V3.2 TP 8 at batch B, one split, stage 1.
"""
import sys, torch
sys.path.insert(0, "tests/bench")
from bench_flash_mla import MODELS
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem, sparse_decode
B = int(sys.argv[1]); bt = int(sys.argv[2]); w = int(sys.argv[3])
problem = SparseDecodeProblem(B=B, **MODELS["V3.2 TP8"])
inputs = KERNEL.make_inputs(problem, 0, "cuda")
cfg = dict(BLOCK_T=bt, H_TILE=16, NUM_SPLITS=1, num_warps=w, num_stages=1)
for _ in range(4):
    sparse_decode(**inputs, config=cfg)
torch.cuda.synchronize()
