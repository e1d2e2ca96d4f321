"""One MoE call, repeated 4 times, for Nsight Compute (plain script; BENCHMARKS.md, fifth and sixth sessions).

``ncu -k regex:_moe_gemv1 --launch-skip 2 --launch-count 1 --section SpeedOfLight ... python3
tests/bench/moe_one_call.py MODEL M BLOCK_N WARPS STAGES [PATH [BLOCK_K [SPLIT_K]]]``: by default the gemv
path, BLOCK_M 1, BLOCK_K 512, SPLIT_K 1, ``group_asm``; PATH ``mma`` runs the tensor-core decode path (BLOCK_M 8).
"""
import sys, torch
sys.path.insert(0, "tests/bench")
from bench_mxfp4_moe import MODELS
from aotune.kernels.mxfp4_moe import KERNEL, MoEProblem, fused_moe
model, M, bn, w, st = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
path = sys.argv[6] if len(sys.argv) > 6 else "gemv"
bk = int(sys.argv[7]) if len(sys.argv) > 7 else 512
split = int(sys.argv[8]) if len(sys.argv) > 8 else 1
p = MoEProblem(M=M, **MODELS[model])
inp = KERNEL.make_inputs(p, 0, "cuda")
cfg = dict(PATH=path, BLOCK_M=8 if path == "mma" else 1, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, SPLIT_K=split,
           DEQ="group_asm", num_warps=w, num_stages=st)
for _ in range(4):
    fused_moe(**inp, config=cfg)
torch.cuda.synchronize()
print("ok", model, M, cfg)
