"""Fingerprints of the sm_90 SASS of FlashMLA's mma kernels, compiled on any host (no GPU; plain script).

A refactor of ``kernels/_mla_mma.py`` / ``_mla_mma8.py`` that leaves every fingerprint unchanged runs the
very machine code the GPU tests and timings ran, so it needs no device time. Usage:
``python tests/bench/mla_sass_fingerprint.py OUT.json`` before and after the change, then ``diff`` the two
files. The variants: V3.2 and V4-Flash TP 8 (B = 64), each head tiling and BLOCK_T of the space, one split /
four with PDL / four fused, and with lengths and S_q = 2 two and three splits (25 kernels).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

MODELS = (("V3.2", dict(S_q=1, H=16, topk=2048, layout="v32", page_size=64), ((16, 16), (16, 32))),
          ("V4-Flash", dict(S_q=1, H=8, topk=512, layout="v4", page_size=256, extra_topk=128, has_sink=True),
           ((16, 16), (8, 16), (8, 32))))
PLAIN = ((1, 0, "launch"), (4, 1, "launch"), (4, 0, "fused"))
WITH_LENGTHS = ((2, 1, "launch"), (3, 0, "fused"))


def variants() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for name, fields, tiles in MODELS:
        for (h_tile, block_t), lengths in ((t, flag) for flag in (False, True) for t in tiles):
            problem = dict(fields, has_topk_length=True, S_q=2) if lengths else fields
            for splits, pdl, combine in WITH_LENGTHS if lengths else PLAIN:
                out.append((name, problem, dict(PATH="mma", BLOCK_T=block_t, H_TILE=h_tile, NUM_SPLITS=splits,
                                                num_warps=4, num_stages=1, PDL=pdl, COMBINE=combine)))
    return out


def fingerprint(variant: tuple[str, dict[str, Any], dict[str, Any]]) -> list[Any]:
    """[name, problem, config, kernel, instruction count, sha256 of the instructions] of one variant."""
    os.environ.pop("TRITON_INTERPRET", None)
    from aotune.kernels.flash_mla import SparseDecodeProblem, launches
    from aotune.tuner.arch import get_arch
    from aotune.tuner.feasibility import compile_launch, cuobjdump

    name, fields, config = variant
    (launch,) = [x for x in launches(SparseDecodeProblem(B=64, **fields), config) if "mma" in x.fn.__name__]
    sass = cuobjdump(compile_launch(launch, get_arch("sm_90")).asm["cubin"], "-sass")
    instructions = re.findall(r"/\*[0-9a-f]{4,}\*/\s+([^;]*);", sass)
    digest = hashlib.sha256("\n".join(instructions).encode()).hexdigest()
    return [name, fields, config, launch.fn.__name__, len(instructions), digest]


if __name__ == "__main__":
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(fingerprint, variants()))
    with open(sys.argv[1], "w") as handle:
        handle.write("\n".join(json.dumps(row) for row in rows) + "\n")
    print(f"{len(rows)} kernels fingerprinted into {sys.argv[1]}")
