"""One FlashMLA call, repeated 4 times, for Nsight Compute (plain script; BENCHMARKS.md, fourth session).

``ncu -k regex:mla_decode --launch-skip 2 --launch-count 1 --section SpeedOfLight ... python3
tests/bench/mla_one_call.py B BLOCK_T WARPS [SPLITS [STAGES [MODEL [PATH]]]]``: V3.2 TP 8 at batch B, by default
one split, stage 1 and the Triton path.
"""
import sys, torch
sys.path.insert(0, "tests/bench")
from bench_flash_mla import MODELS
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem, sparse_decode
B, bt, w = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
splits = int(sys.argv[4]) if len(sys.argv) > 4 else 1
stages = int(sys.argv[5]) if len(sys.argv) > 5 else 1
model = sys.argv[6] if len(sys.argv) > 6 else "V3.2 TP8"
path = sys.argv[7] if len(sys.argv) > 7 else "triton"
problem = SparseDecodeProblem(B=B, **MODELS[model])
inputs = KERNEL.make_inputs(problem, 0, "cuda")
cfg = dict(PATH=path, BLOCK_T=bt, H_TILE=16, NUM_SPLITS=splits, num_warps=w, num_stages=stages)
for _ in range(4):
    sparse_decode(**inputs, config=cfg)
torch.cuda.synchronize()
