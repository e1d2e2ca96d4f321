"""A/B of programmatic dependent launch (config ``PDL`` 0 / 1, ``kernels/_pdl.py``) on the decode calls, one GPU.

``python3 tests/bench/pdl_ab.py [floor] [moe] [mla] [tuned]`` (default: the first three), sm_90 or later
(``tuned``: the MoE and FlashMLA parts on the H100 tables' tuned config of each row only):
- floor: a chain of 2 and 4 tiny dependent kernels per call, CUDA-graph replays, plain launches against PDL
  launches (each kernel lets the next one start on entry, then waits for the one before): what PDL can save
  per launch boundary;
- moe: ``fused_moe`` at the issue's decode shapes (DeepSeek-V4-Flash TP 1 and 8, gpt-oss-120b; M = 1, 8, 32)
  over a few gemv and mma configs (first GEMM split or not), timed exactly as ``bench_mxfp4_moe.py`` does
  (rotated weight sets out of L2, one CUDA graph per timing), PDL 0, 1, and where the launcher prefetches
  the second GEMM's weights also 1 without that prefetch, interleaved, best of 3 rounds; the outputs must be
  equal (bitwise; to 1e-6 where the second GEMM adds K splits with atomics);
- mla: ``sparse_decode`` (V3.2 and V4-Flash TP 8, B = 1, 8, 64) with its split-KV configs, the same way
  (``bench_flash_mla.graph_time``), output and lse bitwise equal.
Prints markdown tables (us per call; "frac" as in the issue tables: active weight bytes over the measured copy
bandwidth, for the faster of off and on).
"""
from __future__ import annotations

import contextlib
import statistics
import sys
from typing import Any

import torch
import triton
import triton.language as tl

from bench_flash_mla import MODELS as MLA_MODELS
from bench_flash_mla import graph_time, input_sets
from bench_mxfp4_moe import MODELS as MOE_MODELS
from bench_mxfp4_moe import _events_ms, _sets, active_bytes, copy_bandwidth, rotated_sets, time_config
from aotune.kernels import _pdl, mxfp4_moe, rel_error
from aotune.kernels._pdl import gdc_launch_dependents, gdc_wait
from aotune.kernels.flash_mla import KERNEL as MLA
from aotune.kernels.flash_mla import sparse_decode
from aotune.kernels.mxfp4_moe import SPACE, MoEProblem, fused_moe


def _mma(bn: int, bk: int, warps: int, split: int) -> dict[str, Any]:
    return dict(PATH="mma", BLOCK_M=8, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, SPLIT_K=split, DEQ="group_asm",
                num_warps=warps, num_stages=1)


def _gemv(bn: int, bk: int, warps: int, split: int, stages: int) -> dict[str, Any]:
    return dict(PATH="gemv", BLOCK_M=1, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, SPLIT_K=split, DEQ="group_asm",
                num_warps=warps, num_stages=stages)


MOE_CONFIGS = [_mma(32, 256, 1, 1), _mma(32, 256, 1, 4), _mma(128, 256, 4, 1), _gemv(16, 512, 1, 1, 3),
               _gemv(16, 512, 1, 4, 3)]


# (PDL, second-GEMM prefetch allowed): off, on as the launcher decides, on without the prefetch.
Mode = tuple[int, bool]


@contextlib.contextmanager
def _mode(mode: Mode) -> Any:
    """The config's PDL, and the launcher's prefetch switched off when the mode says so."""
    saved = _pdl.PREFETCH_MAX_BYTES
    if not mode[1]:
        _pdl.PREFETCH_MAX_BYTES = -1
    try:
        yield mode[0]
    finally:
        _pdl.PREFETCH_MAX_BYTES = saved


def _compile(job: tuple[dict[str, Any], dict[str, Any], Mode]) -> str:
    from aotune.tuner.arch import get_arch
    from aotune.tuner.feasibility import compile_launch

    fields, config, mode = job
    major, minor = fields.pop("_capability")
    with _mode(mode) as pdl:
        for launch in mxfp4_moe.launches(MoEProblem(**fields), dict(config, PDL=pdl)):
            compile_launch(launch, get_arch(f"sm_{major}{minor}"))
    return "ok"


def precompile_moe() -> None:
    """Compile every (shape, config, mode) in 16 processes: lands in Triton's cache for the JIT."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs = []
    for name, fields in MOE_MODELS.items():
        for m in (1, 8, 32):
            p = MoEProblem(M=m, **fields)
            for config in (c for c in MOE_CONFIGS + [TUNED_MOE[name, m]] if SPACE.check(c, p) is None):
                for mode in _moe_modes(p, config):
                    jobs.append((dict(fields, M=m, _capability=torch.cuda.get_device_capability()), config, mode))
    with ProcessPoolExecutor(16, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_compile, jobs, chunksize=2))
    print(f"precompiled {results.count('ok')} of {len(jobs)}", flush=True)


# The tuned configs of the H100 tables (BENCHMARKS.md, eighteenth session), for ``tuned``: the issue tables' rows
# with PDL off and on.
TUNED_MOE = {("dsv4-flash-tp1", 1): _gemv(16, 256, 1, 1, 3), ("dsv4-flash-tp1", 8): _mma(32, 256, 1, 1),
             ("dsv4-flash-tp1", 32): _mma(128, 256, 4, 1), ("dsv4-flash-tp8", 1): _gemv(16, 512, 2, 4, 2),
             ("dsv4-flash-tp8", 8): _mma(32, 256, 1, 2), ("dsv4-flash-tp8", 32): _mma(128, 256, 4, 2),
             ("gpt-oss-120b-tp1", 1): _gemv(16, 256, 1, 1, 3), ("gpt-oss-120b-tp1", 8): _mma(32, 256, 1, 1),
             ("gpt-oss-120b-tp1", 32): _mma(64, 256, 2, 1)}
_MLA_MMA = dict(PATH="mma", H_TILE=16, num_warps=4, num_stages=1)
TUNED_MLA = {("V3.2 TP8", 1): dict(_MLA_MMA, BLOCK_T=32, NUM_SPLITS=64),
             ("V3.2 TP8", 8): dict(_MLA_MMA, BLOCK_T=32, NUM_SPLITS=16),
             ("V3.2 TP8", 64): dict(_MLA_MMA, BLOCK_T=32, NUM_SPLITS=4),
             ("V4-Flash TP8", 1): dict(_MLA_MMA, BLOCK_T=16, NUM_SPLITS=32),
             ("V4-Flash TP8", 8): dict(_MLA_MMA, BLOCK_T=16, NUM_SPLITS=16),
             ("V4-Flash TP8", 64): dict(_MLA_MMA, BLOCK_T=16, NUM_SPLITS=4)}
MLA_CONFIGS = [dict(PATH="mma", BLOCK_T=16, H_TILE=16, NUM_SPLITS=s, num_warps=4, num_stages=1) for s in (4, 16)]
MLA_CONFIGS += [dict(PATH="triton", BLOCK_T=32, H_TILE=16, NUM_SPLITS=8, num_warps=4, num_stages=1)]


@triton.jit
def _tiny(x_ptr, PDL: tl.constexpr):
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    tl.store(x_ptr + tl.program_id(0), tl.load(x_ptr + tl.program_id(0)) + 1.0)


def floor() -> None:
    """Per-call microseconds of a chain of 2 and 4 tiny dependent kernels, plain and PDL."""
    x = torch.zeros(132, device="cuda")
    print("| kernels per call | plain (us) | PDL (us) |\n|---|---|---|")
    for chain in (2, 4):
        times = []
        for pdl in (False, True):
            def calls(pdl: bool = pdl) -> None:
                for _ in range(100):
                    for k in range(chain):
                        extra = dict(launch_pdl=True) if pdl and k else {}
                        _tiny[(132,)](x, PDL=pdl, **extra)
            calls()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                calls()
            graph.replay()
            times.append(statistics.median(_events_ms(graph.replay, 15)) * 1e3 / 100)
        print(f"| {chain} | {times[0]:.2f} | {times[1]:.2f} |", flush=True)


def _moe_configs(name: str, m: int, tuned: bool) -> list[dict[str, Any]]:
    return [TUNED_MOE[name, m]] if tuned else MOE_CONFIGS


def _moe_modes(p: MoEProblem, config: dict[str, Any]) -> list[Mode]:
    """Off, on, and on without the prefetch where the launcher prefetches."""
    prefetch = mxfp4_moe.pdl_of(p, dict(config, PDL=1))[1]
    return [(0, True), (1, True)] + ([(1, False)] if prefetch else [])


def _run_moe(mode: Mode, fn: Any, sets: list[dict[str, Any]], config: dict[str, Any]) -> Any:
    with _mode(mode) as pdl:
        return fn(sets, dict(config, PDL=pdl))


def _same(a: torch.Tensor, b: torch.Tensor, atomic: bool) -> bool:
    return rel_error(a, b) <= 1e-6 if atomic else torch.equal(a, b)


def moe(copy_bw: float, tuned: bool = False) -> None:
    print("| model | M | config | PDL off (us) | PDL on (us) | on / off | on, no prefetch (us) | frac (best) "
          "| same output |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, fields in MOE_MODELS.items():
        for m in (1, 8, 32):
            p = MoEProblem(M=m, **fields)
            sets = _sets(p, rotated_sets(p), seed=p.M)
            active = active_bytes(p, sets)
            for config in (c for c in _moe_configs(name, m, tuned) if SPACE.check(c, p) is None):
                modes = _moe_modes(p, config)
                try:
                    best = [float("inf")] * len(modes)
                    for _ in range(3):
                        for i, mode in enumerate(modes):
                            best[i] = min(best[i], _run_moe(mode, lambda ss, c: time_config(ss, c, 10), sets, config))
                    outs = [_run_moe(mode, lambda ss, c: fused_moe(**ss[0], config=c), sets, config) for mode in modes]
                except Exception as exc:  # noqa: BLE001 - reported, not fatal
                    print(f"| {name} | {m} | {config} | FAIL {type(exc).__name__}: {str(exc)[:160]} ||||||",
                          flush=True)
                    continue
                atomic = config["PATH"] == "gemv" and config["SPLIT_K"] > 1
                tag = f"{config['PATH']} BN{config['BLOCK_N']} BK{config['BLOCK_K']} w{config['num_warps']} " \
                      f"s{config['num_stages']} split{config['SPLIT_K']}"
                frac = active / (min(best) * 1e-6) / copy_bw
                no_prefetch = f"{best[2]:.1f}" if len(modes) > 2 else "(no prefetch here)"
                same = all(_same(out, outs[0], atomic) for out in outs[1:])
                print(f"| {name} | {m} | {tag} | {best[0]:.1f} | {best[1]:.1f} | {best[1] / best[0]:.3f} | "
                      f"{no_prefetch} | {frac:.2f} | {same} |", flush=True)
            del sets
            torch.cuda.empty_cache()


def mla(tuned: bool = False) -> None:
    print("| model | B | config | PDL off (us) | PDL on (us) | on / off | same output |\n|---|---|---|---|---|---|---|")
    for name, fields in MLA_MODELS.items():
        for b in (1, 8, 64):
            problem = MLA.problem(dict(fields, B=b))
            sets = input_sets(problem)
            configs = [TUNED_MLA[name, b]] if tuned else MLA_CONFIGS
            for config in (c for c in configs if MLA.space.check(c, problem) is None):
                try:
                    best = [float("inf"), float("inf")]
                    for _ in range(3):
                        for pdl in (0, 1):
                            best[pdl] = min(best[pdl], graph_time(sets, dict(config, PDL=pdl)) * 1e6)
                    off = sparse_decode(**sets[0], config=dict(config, PDL=0))
                    on = sparse_decode(**sets[0], config=dict(config, PDL=1))
                except Exception as exc:  # noqa: BLE001 - reported, not fatal
                    print(f"| {name} | {b} | {config} | FAIL {type(exc).__name__}: {str(exc)[:160]} |||", flush=True)
                    continue
                same = torch.equal(off[0], on[0]) and torch.equal(off[1], on[1])
                tag = " ".join(f"{k}={v}" for k, v in config.items())
                print(f"| {name} | {b} | {tag} | {best[0]:.1f} | {best[1]:.1f} | {best[1] / best[0]:.3f} | {same} |",
                      flush=True)
            del sets
            torch.cuda.empty_cache()


def main() -> None:
    steps = sys.argv[1:] or ["floor", "moe", "mla"]
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    if "floor" in steps:
        floor()
    if "moe" in steps or "tuned" in steps:
        copy_bw = copy_bandwidth()
        print(f"copy bandwidth {copy_bw / 1e9:.0f} GB/s", flush=True)
        precompile_moe()
        moe(copy_bw, tuned="tuned" in steps)
    if "mla" in steps or "tuned" in steps:
        mla(tuned="tuned" in steps)


if __name__ == "__main__":
    main()
