"""Registers, spills and the step loop's opcode counts of FlashMLA's mma path, compiled on any host (no GPU).

``python tests/bench/mla_sass_loops.py [MODEL] [BLOCK_T] [--maxnreg N] [--kernel FILE]`` compiles the decode
kernel of ``MODEL`` ("V3.2 TP8" or "V4-Flash TP8", as in ``bench_flash_mla.MODELS``; B = 256, one split) for
sm_90 with ``tuner.feasibility.compile_launch``, disassembles it with Triton's ``cuobjdump -sass`` and prints
each loop that holds HMMAs (the first is the step loop; its count includes the rarely taken rebase branch) and
the kernel's barrier and local-memory instruction counts. ``--maxnreg`` caps the registers (a launch option);
``--kernel`` compiles ``mla_decode_mma_kernel`` from another copy of ``kernels/_mla_mma.py`` instead
(a variant under study). BENCHMARKS.md, FlashMLA, thirteenth session.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import re

from bench_flash_mla import MODELS
from moe_sass_loops import print_hmma_loops

from aotune.kernels import flash_mla
from aotune.kernels.flash_mla import SparseDecodeProblem, launches
from aotune.tuner.arch import get_arch
from aotune.tuner.feasibility import compile_launch, cubin_resources, cuobjdump


def load_variant(path: str) -> object:
    """``mla_decode_mma_kernel`` of the module at ``path`` (a copy of ``kernels/_mla_mma.py``)."""
    spec = importlib.util.spec_from_file_location(f"mla_variant_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mla_decode_mma_kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="V3.2 TP8", choices=sorted(MODELS))
    parser.add_argument("block_t", nargs="?", type=int, default=16)
    parser.add_argument("--maxnreg", type=int)
    parser.add_argument("--kernel", help="a copy of kernels/_mla_mma.py to compile instead")
    args = parser.parse_args()
    if args.kernel:
        flash_mla.mla_decode_mma_kernel = load_variant(args.kernel)
    problem = SparseDecodeProblem(B=256, **MODELS[args.model])
    config = dict(PATH="mma", BLOCK_T=args.block_t, H_TILE=16, NUM_SPLITS=1, num_warps=4, num_stages=1)
    launch = launches(problem, config)[0]
    if args.maxnreg:
        launch.kwargs["maxnreg"] = args.maxnreg
    compiled = compile_launch(launch, get_arch("sm_90"))
    regs, spill = cubin_resources(compiled.asm["cubin"])
    sass = cuobjdump(compiled.asm["cubin"], "-sass")
    ops = collections.Counter(m.group(1) for m in re.finditer(r"\b(BAR\.SYNC|LDL|STL)\b", sass))
    print(f"== {args.model} BLOCK_T {args.block_t}: {regs} registers, {spill} spill bytes, shared "
          f"{compiled.metadata.shared} B; kernel: {ops['BAR.SYNC']} BAR.SYNC, {ops['LDL']} LDL, {ops['STL']} STL")
    print_hmma_loops(sass, 16)


if __name__ == "__main__":
    main()
