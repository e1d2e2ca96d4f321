"""Variants of the MoE mma path timed against its best configs (a plain script; BENCHMARKS.md, MoE, twelfth
and fifteenth sessions). The first two are loop variants that the config space does not hold, both
measured slower and not landed; the third is a part of the space.

``python3 tests/bench/moe_mma_variants.py regcap``: a register cap (Triton's ``maxnreg`` launch option, 128
or 96) for 4-5 CTAs of 4 warps per SM instead of 3 at 167 registers, at BLOCK_K 128 and 256.
``python3 tests/bench/moe_mma_variants.py ring256``: the shared-memory weight ring (num_stages 2-4) at
BLOCK_K 256, which the space restricts to BLOCK_K 128.
``python3 tests/bench/moe_mma_variants.py split``: the first GEMM's K split (SPLIT_K 2 and 4) at the best
tiles, and at V4-Flash TP 8 M = 1 and 8 too (where few experts fill the GPU).
``python3 tests/bench/moe_mma_variants.py best``: the split problems at three configs each (the best tile,
its ring form, its 4-way split), for timing a kernel change before and after (as for the landed
``_store_route``: BENCHMARKS.md, MoE, eighteenth session).

For DeepSeek-V4-Flash TP 1 and gpt-oss-120b TP 1 at M = 8 and 32 and V4-Flash TP 8 at M = 32 it prints,
per config, the registers and spill bytes of both GEMMs (compiled for sm_90 in 16 processes), the time
(``bench_mxfp4_moe.time_config``, best of two medians of 10 graph replays), the active weight bytes over
the measured copy bandwidth and the relative error against ``fused_moe_ref``.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).parent))
import bench_mxfp4_moe as bench  # noqa: E402
from aotune.kernels import mxfp4_moe, rel_error  # noqa: E402
from aotune.kernels.mxfp4_moe import MoEProblem, fused_moe, fused_moe_ref  # noqa: E402

PROBLEMS = [(m, M) for m in ("dsv4-flash-tp1", "gpt-oss-120b-tp1") for M in (8, 32)] + [("dsv4-flash-tp8", 32)]
SPLIT_PROBLEMS = [("dsv4-flash-tp8", M) for M in (1, 8, 32)] + [(m, M) for m in ("dsv4-flash-tp1", "gpt-oss-120b-tp1")
                                                               for M in (8, 32)]
_RING_REASON = "mma path: num_stages > 1"
_plain_mma_launches = mxfp4_moe._mma_launches


def _capped_mma_launches(ts: Any, p: MoEProblem, limit: float | None, cfg: dict[str, Any]) -> list:
    """The mma launches with ``maxnreg`` set from the config's ``_maxnreg`` (absent: no cap)."""
    out = _plain_mma_launches(ts, p, limit, cfg)
    if cfg.get("_maxnreg"):
        for launch, _ in out:
            launch.kwargs["maxnreg"] = cfg["_maxnreg"]
    return out


def _ring_allowed(constraint: Any) -> Any:
    def check(config: dict[str, Any], problem: MoEProblem) -> str | None:
        reason = constraint(config, problem)
        return None if reason and reason.startswith(_RING_REASON) else reason
    return check


# Applied at import, so that the spawned compile processes see the same variants (``fused_moe`` checks
# configs against the module's ``SPACE``).
mxfp4_moe._mma_launches = _capped_mma_launches
mxfp4_moe.SPACE = dataclasses.replace(mxfp4_moe.SPACE,
                                      constraints=tuple(_ring_allowed(c) for c in mxfp4_moe.SPACE.constraints))


def _mma(bn: int, bk: int, warps: int, stages: int, cap: int | None = None, split: int = 1) -> dict[str, Any]:
    config = dict(PATH="mma", BLOCK_M=8, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, SPLIT_K=split, DEQ="group_asm",
                  num_warps=warps, num_stages=stages)
    return dict(config, _maxnreg=cap) if cap else config


def configs(variant: str, M: int) -> list[dict[str, Any]]:
    """The space's best tile at this M (first) and the variant's configs."""
    bn, warps = (32, 1) if M <= 8 else (128, 4)
    if variant == "split":
        tiles = [(bn, 256, warps, 1), (bn, 128, warps, 3), (64, 128, 2, 1)]
        return [_mma(*tile, split=split) for tile in tiles for split in (1, 2, 4)]
    if variant == "best":
        return [_mma(bn, 256, warps, 1), _mma(bn, 128, warps, 3), _mma(bn, 256, warps, 1, split=4)]
    if variant == "ring256":
        return [_mma(bn, 256, warps, st) for st in (1, 2, 3, 4)] + [_mma(64, 256, 2, st) for st in (1, 2, 3)]
    out = [_mma(bn, 256, warps, 1), _mma(bn, 256, warps, 1, 128)]
    out += [_mma(bn, 128, warps, st, cap) for st in (1, 2, 3) for cap in (None, 128, 96)]
    return out + [_mma(64, 128, 2, 2, cap) for cap in (None, 128)]


def _compile(job: tuple[MoEProblem, dict[str, Any]]) -> list[tuple[int, int]]:
    from aotune.tuner.arch import get_arch
    from aotune.tuner.feasibility import compile_launch, cubin_resources

    problem, config = job
    out = []
    for launch in mxfp4_moe.launches(problem, config):
        compiled = compile_launch(launch, get_arch("sm_90"))
        if launch.fn.__name__.startswith("_moe_mma"):
            out.append(cubin_resources(compiled.asm["cubin"]))
    return out


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) > 1 else "regcap"
    if variant not in ("regcap", "ring256", "split", "best"):
        raise SystemExit(f"variant {variant!r}: regcap, ring256, split or best")
    problems = SPLIT_PROBLEMS if variant in ("split", "best") else PROBLEMS
    jobs = [(MoEProblem(M=M, **bench.MODELS[m]), c) for m, M in problems for c in configs(variant, M)]
    start = time.time()
    with ProcessPoolExecutor(16, mp_context=multiprocessing.get_context("spawn")) as pool:
        resources = iter(list(pool.map(_compile, jobs, chunksize=1)))
    bw = bench.copy_bandwidth()
    print(f"compiled {len(jobs)} in {time.time() - start:.0f} s; copy {bw / 1e9:.0f} GB/s", flush=True)
    for model, M in problems:
        p = MoEProblem(M=M, **bench.MODELS[model])
        sets = bench._sets(p, bench.rotated_sets(p), seed=M)
        active = bench.active_bytes(p, sets)
        ref = fused_moe_ref(**sets[0])
        for c in configs(variant, M):
            regs = next(resources)
            err = rel_error(fused_moe(**sets[0], config=c), ref)
            us = min(bench.time_config(sets, c, 10) for _ in range(2))
            print(f"{model} M={M} BN{c['BLOCK_N']} BK{c['BLOCK_K']} w{c['num_warps']} s{c['num_stages']} "
                  f"SK{c['SPLIT_K']} "
                  f"maxnreg {c.get('_maxnreg', '-')} (regs, spill bytes) {regs}: {us:.1f} us, "
                  f"{active / (us * 1e-6) / bw:.3f} of copy, rel_error {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
