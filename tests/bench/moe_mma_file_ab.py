"""Side-by-side timing of copies of the MoE mma kernels on one GPU (a plain script; a tool for kernel work).

``python3 tests/bench/moe_mma_file_ab.py NAME=FILE [NAME=FILE ...]``: each FILE is a copy of
``kernels/_moe_mma.py`` (``main`` names the installed one) whose ``_moe_mma1`` / ``_moe_mma2`` replace the
launcher's. For the rows below (gpt-oss-120b, whose K = I = 2880 end every row in a partial span, and a
DeepSeek-V4-Flash TP 1 control without one) every variant runs the same config on the same rotated weight
sets: its time (``bench_mxfp4_moe.time_config``, best of 3 rounds interleaved over the variants), the active
experts' bytes over the measured copy bandwidth, and its relative error against ``fused_moe_ref``.
BENCHMARKS.md, MoE, nineteenth session (the tail-first variant, measured and not landed).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_mxfp4_moe as bench  # noqa: E402
from aotune.kernels import mxfp4_moe, rel_error  # noqa: E402
from aotune.kernels.mxfp4_moe import MoEProblem, fused_moe, fused_moe_ref  # noqa: E402

_MMA = dict(PATH="mma", BLOCK_M=8, BLOCK_K=256, GROUP_M=1, SPLIT_K=1, DEQ="group_asm", num_stages=1)
ROWS = [("gpt-oss-120b-tp1", 8, dict(_MMA, BLOCK_N=32, num_warps=1)),
        ("gpt-oss-120b-tp1", 8, dict(_MMA, BLOCK_N=32, BLOCK_K=128, num_warps=1, num_stages=3)),
        ("gpt-oss-120b-tp1", 32, dict(_MMA, BLOCK_N=64, num_warps=2)),
        ("gpt-oss-120b-tp1", 32, dict(_MMA, BLOCK_N=128, num_warps=4)),
        ("dsv4-flash-tp1", 8, dict(_MMA, BLOCK_N=32, num_warps=1))]


def load(path: str) -> tuple[object, object]:
    """(``_moe_mma1``, ``_moe_mma2``) of the module at ``path``."""
    spec = importlib.util.spec_from_file_location(f"moe_variant_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._moe_mma1, module._moe_mma2


def main() -> None:
    variants = {}
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        variants[name] = (mxfp4_moe._moe_mma1, mxfp4_moe._moe_mma2) if path == "main" else load(path)
    copy_bw = bench.copy_bandwidth()
    print(f"# {torch.cuda.get_device_name()}; copy {copy_bw / 1e12:.2f} TB/s", flush=True)
    print("| model | M | config | " + " | ".join(f"{n} us (frac, err)" for n in variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    original = mxfp4_moe._moe_mma1, mxfp4_moe._moe_mma2
    try:
        for model, m, config in ROWS:
            p = MoEProblem(M=m, **bench.MODELS[model])
            sets = bench._sets(p, bench.rotated_sets(p), seed=m)
            active = bench.active_bytes(p, sets)
            ref = fused_moe_ref(**sets[0])
            times, errors = {n: float("inf") for n in variants}, {}
            for round_ in range(3):
                for name, (k1, k2) in variants.items():
                    mxfp4_moe._moe_mma1, mxfp4_moe._moe_mma2 = k1, k2
                    if round_ == 0:
                        errors[name] = rel_error(fused_moe(**sets[0], config=config), ref)
                    times[name] = min(times[name], bench.time_config(sets, config, 10))
            cells = " | ".join(f"{times[n]:.1f} ({active / (times[n] * 1e-6) / copy_bw:.2f}, {errors[n]:.1e})"
                               for n in variants)
            tile = f"BN{config['BLOCK_N']} BK{config['BLOCK_K']} w{config['num_warps']} s{config['num_stages']}"
            print(f"| {model} | {m} | {tile} | {cells} |", flush=True)
            del sets
            torch.cuda.empty_cache()
    finally:
        mxfp4_moe._moe_mma1, mxfp4_moe._moe_mma2 = original


if __name__ == "__main__":
    main()
