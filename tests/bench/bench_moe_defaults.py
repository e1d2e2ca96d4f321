"""The MXFP4 MoE's untuned defaults on one GPU, side by side at decode sizes (a plain script).

For each model of ``bench_mxfp4_moe.MODELS`` and M in ``--tokens`` it times (same method as
``bench_mxfp4_moe.py``: rotated weight sets, one CUDA graph, median of ``--reps`` replays) the gemv
runtime default, the two mma configs the runtime default may choose, and what ``runtime_default`` picks
on this GPU, and prints one markdown row per shape. Usage:
``python3 tests/bench/bench_moe_defaults.py [--tokens 1,2,4,8,16] [--reps 10]``.
"""
from __future__ import annotations

import argparse
import sys

sys.path.insert(0, "tests/bench")
from bench_mxfp4_moe import MODELS, _sets, precompile, rotated_sets, time_config  # noqa: E402

from aotune.kernels.device import device_class  # noqa: E402
from aotune.kernels.mxfp4_moe import (  # noqa: E402
    _DECODE_DEFAULT, _MMA_DEFAULT, _MMA_SMALL_DEFAULT, MoEProblem, runtime_default,
)

CANDIDATES = {"gemv default": _DECODE_DEFAULT, "mma BN32 w1": _MMA_SMALL_DEFAULT, "mma BN128 w4": _MMA_DEFAULT}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", default="1,2,4,8,16")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    device = device_class(None)
    tokens = [int(t) for t in args.tokens.split(",")]
    problems = [(name, MoEProblem(M=m, **fields)) for name, fields in MODELS.items() for m in tokens]
    precompile([(p.to_dict(), dict(c)) for _, p in problems for c in CANDIDATES.values()])  # 16 processes
    print(f"# {device.key}")
    print("| model | M | " + " | ".join(f"{name} (us)" for name in CANDIDATES) + " | runtime_default picks |")
    print("|---|---|" + "---|" * (len(CANDIDATES) + 1))
    for name, p in problems:
        sets = _sets(p, rotated_sets(p), seed=p.M)
        times = [time_config(sets, dict(config), args.reps) for config in CANDIDATES.values()]
        picked = runtime_default(p, device)
        label = next((k for k, c in CANDIDATES.items() if c == picked), str(picked))
        print(f"| {name} | {p.M} | " + " | ".join(f"{t:.1f}" for t in times) + f" | {label} |", flush=True)


if __name__ == "__main__":
    main()
