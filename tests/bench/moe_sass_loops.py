"""Opcode counts of the MoE mma path's SASS loops, compiled on any host (no GPU; a plain script).

``python tests/bench/moe_sass_loops.py [ARCH] [BLOCK_N] [BLOCK_K] [WARPS] [STAGES] [--all]``
(defaults sm_90 128 256 4 1) compiles GEMM1 (``--all``: every launch) of DeepSeek-V4-Flash TP 1 at M = 32
with ``tuner.feasibility.compile_launch``, disassembles it with Triton's ``cuobjdump -sass`` and prints, for
each loop (a backward branch and its target) that holds HMMAs, its instruction count and top opcodes. The
first such loop is the fast-decode step loop (BENCHMARKS.md, MoE, eighth session).
"""
from __future__ import annotations

import collections
import re
import sys

from aotune.kernels import mxfp4_moe
from aotune.tuner.arch import get_arch
from aotune.tuner.feasibility import compile_launch, cubin_resources, cuobjdump

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def loops(text: str) -> list[tuple[int, int, list[str]]]:
    """(start, end, opcodes) of every backward branch's range."""
    ins = [(int(m.group(1), 16), m.group(2), m.group(3)) for m in _LINE.finditer(text)]
    out = []
    for addr, op, rest in ins:
        target = re.search(r"0x([0-9a-f]+)", rest) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < addr:
            lo = int(target.group(1), 16)
            out.append((lo, addr, [o for a, o, _ in ins if lo <= a <= addr]))
    return out


def print_hmma_loops(sass: str, top: int = 12) -> None:
    """Print every loop of ``sass`` that holds HMMAs: its range, instruction count and ``top`` opcodes."""
    for lo, hi, body in loops(sass):
        counts = collections.Counter(op.split(".")[0] for op in body)
        if counts["HMMA"]:
            print(f"  loop {lo:#x}-{hi:#x}: {len(body)} instructions, {counts['HMMA']} HMMA;",
                  dict(counts.most_common(top)))


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    arch = get_arch(args[0] if args else "sm_90")
    bn, bk, warps, stages = (int(a) for a in (args[1:5] + ["128", "256", "4", "1"][len(args[1:5]):]))
    problem = mxfp4_moe.MoEProblem(M=32, K=4096, I=2048, E=256, top_k=6)
    config = dict(PATH="mma", BLOCK_M=8, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, SPLIT_K=1, DEQ="group_asm",
                  num_warps=warps, num_stages=stages)
    launches = mxfp4_moe.launches(problem, config)
    for launch in launches if "--all" in sys.argv else launches[:1]:
        compiled = compile_launch(launch, arch)
        regs, spill = cubin_resources(compiled.asm["cubin"])
        print(f"== {launch.fn.__name__} ({arch.name}): {regs} registers, {spill} spill bytes")
        print_hmma_loops(cuobjdump(compiled.asm["cubin"], "-sass"))


if __name__ == "__main__":
    main()
