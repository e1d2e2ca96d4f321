"""Registers, spills and the step loop's opcode counts of FlashMLA's mma path, compiled on any host (no GPU).

``python tests/bench/mla_sass_loops.py [MODEL] [BLOCK_T] [--maxnreg N] [--kernel FILE]`` compiles the decode
kernel of ``MODEL`` ("V3.2 TP8" or "V4-Flash TP8", as in ``bench_flash_mla.MODELS``; B = 256, one split) for
sm_90 with ``tuner.feasibility.compile_launch``, disassembles it with Triton's ``cuobjdump -sass`` and prints
each loop that holds HMMAs (the first is the step loop; its count includes the rarely taken rebase branch),
the kernel's barrier and local-memory instruction counts, and for each global load of the step loop how many
instructions later (around the back-edge) its destination registers are first read: a gather is waited for
there, so that distance is the math it can hide behind. ``--maxnreg`` caps the registers (a launch option);
``--kernel`` compiles ``mla_decode_mma_kernel`` from another copy of ``kernels/_mla_mma.py`` instead
(a variant under study). BENCHMARKS.md, FlashMLA, thirteenth and fourteenth sessions.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import re

from bench_flash_mla import MODELS
from moe_sass_loops import loops, print_hmma_loops

from aotune.kernels import flash_mla
from aotune.kernels.flash_mla import SparseDecodeProblem, launches
from aotune.tuner.arch import get_arch
from aotune.tuner.feasibility import compile_launch, cubin_resources, cuobjdump


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")
_WIDTH = {"64": 2, "128": 4}


def load_use_distances(sass: str) -> list[int]:
    """For each LDG of the loop with the most HMMAs: instructions until one reads a register it writes."""
    lo, hi, _ = max(loops(sass), key=lambda loop: sum(op.startswith("HMMA") for op in loop[2]))
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in _INSTR.finditer(sass)]
    body = [re.sub(r"^@!?U?P\w+\s+", "", x) for a, x in ins if lo <= a <= hi]
    out = []
    for i, text in enumerate(body):
        load = re.match(r"LDG\.E(?:\.(64|128))?\S*\s+R(\d+)", text)
        if not load:
            continue
        dst = set(range(int(load.group(2)), int(load.group(2)) + _WIDTH.get(load.group(1), 1)))
        for k in range(1, len(body) + 1):
            op, _, operands = body[(i + k) % len(body)].partition(" ")
            regs = operands.split(",")
            sources = regs if op.startswith(("STS", "STG")) else regs[1:]
            if dst & {int(r) for part in sources for r in re.findall(r"\bR(\d+)", part)}:
                out.append(k)
                break
    return sorted(out)


def load_variant(path: str, name: str = "mla_decode_mma_kernel") -> object:
    """The kernel ``name`` of the module at ``path`` (a copy of ``kernels/_mla_mma.py``, or of
    ``kernels/_mla_mma8.py`` with ``name`` "mla_decode_mma8_kernel")."""
    spec = importlib.util.spec_from_file_location(f"mla_variant_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="V3.2 TP8", choices=sorted(MODELS))
    parser.add_argument("block_t", nargs="?", type=int, default=16)
    parser.add_argument("--maxnreg", type=int)
    parser.add_argument("--h-tile", type=int, default=16, help="8: the heads-as-N kernel (_mla_mma8)")
    parser.add_argument("--defer-pv", action="store_true",
                        help="H_TILE 8 with --kernel patched by mla_defer_pv.patch: each tile's PV in the next step")
    parser.add_argument("--kernel", help="a copy of kernels/_mla_mma.py (--h-tile 8: _mla_mma8.py) to compile instead")
    args = parser.parse_args()
    if args.kernel and args.h_tile == 8:
        flash_mla.mla_decode_mma8_kernel = load_variant(args.kernel, "mla_decode_mma8_kernel")
    elif args.kernel:
        flash_mla.mla_decode_mma_kernel = load_variant(args.kernel)
    problem = SparseDecodeProblem(B=256, **MODELS[args.model])
    config = dict(PATH="mma", BLOCK_T=args.block_t, H_TILE=args.h_tile, NUM_SPLITS=1, num_warps=4, num_stages=1)
    launch = launches(problem, config)[0]
    if args.maxnreg:
        launch.kwargs["maxnreg"] = args.maxnreg
    if args.defer_pv:
        launch.kwargs["DEFER_PV"] = True
    compiled = compile_launch(launch, get_arch("sm_90"))
    regs, spill = cubin_resources(compiled.asm["cubin"])
    sass = cuobjdump(compiled.asm["cubin"], "-sass")
    ops = collections.Counter(m.group(1) for m in re.finditer(r"\b(BAR\.SYNC|LDL|STL)\b", sass))
    print(f"== {args.model} BLOCK_T {args.block_t} H_TILE {args.h_tile}: {regs} registers, {spill} spill bytes, shared "
          f"{compiled.metadata.shared} B; kernel: {ops['BAR.SYNC']} BAR.SYNC, {ops['LDL']} LDL, {ops['STL']} STL")
    print_hmma_loops(sass, 16)
    print("  step loop, instructions from each LDG to the first read of its registers:", load_use_distances(sass))


if __name__ == "__main__":
    main()
