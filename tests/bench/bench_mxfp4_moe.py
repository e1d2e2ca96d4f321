"""Benchmark of the MXFP4 MoE on one GPU (a plain script, not collected by pytest).

For DeepSeek-V4-Flash TP 1 and TP 8 and gpt-oss-120b TP 1 at M = 1, 8, 32, 128, 1024, 4096 it
reports: the best time over a sweep of the config space (the "tuned" figure), the best of the SGLang
SM120 hand-picked configs, the torch reference (eager), and the achieved bandwidth of the active
experts' weight bytes (weights + scales + biases of the distinct experts the routing hits) as a fraction
of the measured device-to-device copy bandwidth.

Method: random routing (distinct uniformly random experts per token); each call uses its own weight
set and routing, rotated so that the active weights are not in L2 (>= 256 MB between two uses of a
set); the calls are captured in one CUDA graph, the replay is timed with CUDA events, median of
replays, divided by the number of calls. The sweep runs in two rounds so that the whole table fits one
10-minute device call: every config of ``sweep`` is timed with ``--screen-reps`` replays (within
``--budget-s`` for all problems), then each problem's ``--keep`` fastest and the fastest of each PATH,
the same with the switches that only add to a tile (``refinements``: PDL, DOWN_TILES), SGLang's set and
both defaults are timed again with ``--reps`` replays; "tuned" is the fastest of that round. Before
each round its candidates are compiled ahead of time, each distinct launch once, in 16 processes
(Triton's cache is then hit by the JIT). (The one-round sweep with every switch crossed had 2,262
candidates at M = 1, 8, 32 alone: its precompile took 246 s and the sweep ran out of budget.) Usage:
``python3 tests/bench/bench_mxfp4_moe.py [--reps 15] [--screen-reps 3] [--keep 6] [--budget-s 300]
[--json out.json] [--tokens 1,8,32] [--paths gemv,decode] [--models dsv4-flash-tp8]``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from aotune.kernels import rel_error
from aotune.kernels.device import device_class
from aotune.kernels.mxfp4_moe import (SPACE, MoEProblem, expert_weight_bytes, fused_moe, fused_moe_ref,
                                      runtime_default)

MODELS = {
    "dsv4-flash-tp1": dict(K=4096, I=2048, E=256, top_k=6),
    "dsv4-flash-tp8": dict(K=4096, I=256, E=256, top_k=6),
    "gpt-oss-120b-tp1": dict(K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved",
                             has_bias=True),
}
TOKENS = (1, 8, 32, 128, 1024, 4096)
_BASE = dict(GROUP_M=1, SPLIT_K=1)
_DECODE_TILES = [(32, 256, 4), (64, 128, 4), (128, 128, 8), (64, 128, 8)]
_PREFILL_TILES = [(64, 128, 4, 3), (128, 128, 8, 3), (256, 64, 8, 3), (128, 64, 4, 4)]
# PATH gemv: (BLOCK_M tokens per pass, BLOCK_N rows, BLOCK_K, num_warps, SPLIT_K)
_GEMV_TILES = [(1, 8, 512, 1, 1), (1, 16, 256, 1, 1), (1, 16, 512, 1, 1), (1, 16, 1024, 1, 1), (1, 16, 512, 2, 1),
               (1, 32, 256, 4, 1), (1, 32, 512, 2, 1), (1, 32, 512, 4, 1), (1, 64, 256, 4, 1), (1, 64, 512, 4, 1),
               (1, 32, 512, 2, 2), (1, 64, 512, 4, 2), (2, 16, 512, 1, 1), (2, 32, 512, 2, 1), (2, 32, 256, 4, 1),
               (1, 16, 512, 2, 4), (1, 16, 512, 1, 8), (1, 32, 512, 2, 4), (1, 16, 256, 2, 4)]
_GEMV_STAGES = (1, 2, 3, 4)  # 1: plain loop (registers only); more: cp.async through shared memory
# PATH mma (tensor-core decode, 8 tokens per pass): (BLOCK_N rows, BLOCK_K, num_warps, num_stages); stages > 1
# stream the weights through a shared-memory ring (BLOCK_K 128 only)
_MMA_TILES = [(bn, 128, w, st) for bn, w in ((32, 1), (64, 2), (128, 4), (64, 1), (128, 2), (256, 4))
              for st in (1, 2, 3, 4)] + [(32, 256, 1, 1), (64, 256, 2, 1), (128, 256, 4, 1)]
# ... and with the first GEMM's K split (SPLIT_K 2 / 4: more programs where few experts fill the GPU, TP 8)
_MMA_SPLIT_TILES = [(32, 256, 1, 1), (32, 128, 1, 1), (32, 128, 1, 3), (64, 256, 2, 1), (128, 256, 4, 1),
                    (128, 128, 4, 3)]


def _events_ms(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def copy_bandwidth() -> float:
    """Bytes read + written per second of a 1 GiB device-to-device copy."""
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    return 2 * a.numel() / (statistics.median(_events_ms(lambda: b.copy_(a), 20)) * 1e-3)


def matmul_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    a @ b
    return 2 * 8192 ** 3 / (statistics.median(_events_ms(lambda: a @ b, 20)) * 1e-3) / 1e12


def rotated_sets(p: MoEProblem) -> int:
    """How many weight sets a timing rotates through: >= 256 MB of active weights between two uses of a
    set (out of L2), 2 to 16 of them, at most 20 GB in all."""
    per_set = p.E * expert_weight_bytes(p)
    active_one = min(p.E, p.M * p.top_k) * expert_weight_bytes(p)
    return max(2, min(16, math.ceil(256e6 / active_one), int(20e9 // per_set)))


def _sets(p: MoEProblem, n: int, seed: int) -> list[dict[str, Any]]:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    u8 = dict(dtype=torch.uint8, device="cuda", generator=gen)
    sets = []
    for _ in range(n):
        ids = torch.rand(p.M, p.E, device="cuda", generator=gen).argsort(dim=1)[:, :p.top_k].to(torch.int32)
        tw = torch.rand(p.M, p.top_k, device="cuda", generator=gen) + 0.1
        s = dict(x=torch.randn(p.M, p.K, device="cuda", generator=gen).to(torch.bfloat16),
                 w13=torch.randint(0, 256, (p.E, 2 * p.I, p.K // 2), **u8),
                 w13_scale=torch.randint(116, 125, (p.E, 2 * p.I, p.K // 32), **u8),
                 w2=torch.randint(0, 256, (p.E, p.K, p.I // 2), **u8),
                 w2_scale=torch.randint(116, 125, (p.E, p.K, p.I // 32), **u8),
                 topk_ids=ids.contiguous(), topk_weights=(tw / tw.sum(1, keepdim=True)).contiguous(),
                 activation=p.activation, layout=p.layout,
                 routed_scaling_factor=1.5 if p.activation == "swiglu" else 1.0,
                 swiglu_limit=10.0 if p.activation == "swiglu" else None)
        if p.has_bias:
            s["w13_bias"] = torch.randn(p.E, 2 * p.I, device="cuda", generator=gen) * 0.1
            s["w2_bias"] = torch.randn(p.E, p.K, device="cuda", generator=gen) * 0.1
        sets.append(s)
    return sets


def active_experts(sets: list[dict[str, Any]]) -> float:
    """Distinct routed experts per call, the mean over ``sets``."""
    return statistics.mean(len(torch.unique(s["topk_ids"])) for s in sets)


def active_bytes(p: MoEProblem, sets: list[dict[str, Any]]) -> float:
    """The routed experts' weight, scale and bias bytes per call, the mean over ``sets``."""
    return active_experts(sets) * expert_weight_bytes(p)


def sweep(p: MoEProblem) -> list[dict[str, Any]]:
    """The configs screened for one problem: SGLang's set, tensor-core decode (M <= 128), gemv (M <= 16),
    prefill (M >= 32), each without the switches that only add to a tile (``refinements``)."""
    out: list[dict[str, Any]] = []
    deqs = ("arith", "group_asm", "dot_scaled")
    if p.M <= 128:
        for deq in deqs:
            for bn, bk, warps in _DECODE_TILES:
                out.append(dict(PATH="decode", BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, DEQ=deq, num_warps=warps,
                                num_stages=3, **_BASE))
        for stages in (2, 4):
            out.append(dict(PATH="decode", BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, DEQ="group_asm", num_warps=4,
                            num_stages=stages, **_BASE))
        out.append(dict(PATH="decode", BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, DEQ="group_asm", num_warps=4,
                        num_stages=3, GROUP_M=1, SPLIT_K=2))
    # gemv re-reads an expert's weights per 1-2 tokens: at M = 32 its best was 1.28-1.57x the mma path's at
    # every model on the H100 (BENCHMARKS.md, MoE, eighteenth session, PDL A/B), and it never won at M = 128
    if p.M <= 16:
        for bm, bn, bk, warps, split in _GEMV_TILES:
            for stages in _GEMV_STAGES:
                out.append(dict(PATH="gemv", BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, DEQ="group_asm", num_warps=warps,
                                num_stages=stages, GROUP_M=1, SPLIT_K=split))
        for (bn, bk, warps), stages in itertools.product(((32, 256, 4), (16, 512, 1)), _GEMV_STAGES):
            out.append(dict(PATH="gemv", BLOCK_M=1, BLOCK_N=bn, BLOCK_K=bk, DEQ="arith", num_warps=warps,
                            num_stages=stages, **_BASE))
    if p.M <= 128:
        for bn, bk, warps, stages in _MMA_TILES:
            out.append(dict(PATH="mma", BLOCK_M=8, BLOCK_N=bn, BLOCK_K=bk, DEQ="group_asm", num_warps=warps,
                            num_stages=stages, **_BASE))
        for (bn, bk, warps, stages), split in itertools.product(_MMA_SPLIT_TILES, (2, 4)):
            out.append(dict(PATH="mma", BLOCK_M=8, BLOCK_N=bn, BLOCK_K=bk, DEQ="group_asm", num_warps=warps,
                            num_stages=stages, GROUP_M=1, SPLIT_K=split))
    if p.M >= 32:
        for bm in (16, 32, 64, 128):
            if min(64, p.M // 8) <= bm <= max(32, p.M // 2):
                for bn, bk, warps, stages in _PREFILL_TILES:
                    for deq in deqs:
                        out.append(dict(PATH="prefill", BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, DEQ=deq,
                                        num_warps=warps, num_stages=stages, GROUP_M=8, SPLIT_K=1))
    sglang = [dict(c, _sglang=True) for c in SPACE.baseline("sglang_sm120")]
    return [c for c in sglang + out if SPACE.check(_plain(c), p) is None]


def refinements(p: MoEProblem, config: dict[str, Any], pdl: bool) -> list[dict[str, Any]]:
    """A screened config with the switches that add to its tile rather than replace it, alone and together:
    its launches chained (PDL 1, the gemv and mma paths where ``pdl``: 1-19% at M <= 32 on the H100) and the
    second GEMM's 4-tile loop (DOWN_TILES 4, the mma path's register-buffer BLOCK_K 256 tiles at M = 8-128:
    7-17% at V4-Flash TP 8 on the H100, nothing at M = 1; nineteenth session)."""
    c = _plain(config)
    chain = [dict(PDL=1)] if pdl and c["PATH"] in ("gemv", "mma") else []
    out = [dict(c, **switch) for switch in chain]
    if 8 <= p.M <= 128 and c["PATH"] == "mma" and c["num_stages"] == 1 and c["BLOCK_K"] == 256:
        out += [dict(c, DOWN_TILES=4, **switch) for switch in [{}] + chain]
    return [r for r in out if SPACE.check(r, p) is None]


def screen_order(p: MoEProblem, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The screen's configs, likeliest winners first, since its budget may cut the rest (the first H100 run of
    the two rounds timed 14-55 configs per decode row in 150 s): the gemv path first at M <= 8 and the mma path
    first above, then the other of the two, then the rest; on the mma path the register-loop BLOCK_K 256 tiles
    first (every mma decode winner on the H100). SGLang's set is left to the final round, which times it anyway."""
    first = ("gemv", "mma") if p.M <= 8 else ("mma", "gemv")

    def rank(c: dict[str, Any]) -> tuple[int, bool]:
        path = c["PATH"]
        register_loop = path == "mma" and c["BLOCK_K"] == 256 and c["num_stages"] == 1
        return (first.index(path) if path in first else len(first), not register_loop)

    return sorted((c for c in configs if not c.get("_sglang")), key=rank)


def shortlist(results: list[tuple[float, dict[str, Any]]], keep: int) -> list[dict[str, Any]]:
    """The ``keep`` fastest screened configs and the fastest of each PATH (each once, fastest first)."""
    ranked = sorted(results, key=lambda r: r[0])
    best_of_path = {}
    for _us, config in ranked:
        best_of_path.setdefault(config["PATH"], config)
    out: list[dict[str, Any]] = []
    for config in [c for _, c in ranked[:keep]] + list(best_of_path.values()):
        if config not in out:
            out.append(config)
    return out


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def precompile(jobs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Compile ``jobs`` ((problem fields, config) pairs) for this GPU before any timing, each distinct launch
    once, in 16 processes (``compile_many``; the JIT then hits Triton's cache): a status per job."""
    from aotune.tuner.feasibility import compile_many

    major, minor = torch.cuda.get_device_capability()
    results = compile_many("mxfp4_moe", [(fields, _plain(c)) for fields, c in jobs], f"sm_{major}{minor}",
                           workers=16)
    return [r.status if r.fits else f"{r.status}: {r.reason}" for r in results]


def time_config(sets: list[dict[str, Any]], config: dict[str, Any], reps: int) -> float:
    """Microseconds per call: all sets' calls in one CUDA graph, median of ``reps`` replays."""
    for s in sets:
        fused_moe(**s, config=config)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for s in sets:
            fused_moe(**s, config=config)
    graph.replay()
    ms = statistics.median(_events_ms(graph.replay, reps))
    del graph
    return ms * 1e3 / len(sets)


def configs_of_defaults(p: MoEProblem) -> dict[str, dict[str, Any]]:
    """What a process without a bundle entry runs: the space default and the module's runtime default on
    this GPU."""
    return dict(default_us=dict(SPACE.default),
                runtime_default_us=runtime_default(p, device_class(None)) or dict(SPACE.default))


def _time_or_nan(sets: list[dict[str, Any]], config: dict[str, Any], reps: int) -> float:
    """``time_config``, or NaN (reported) when the config fails."""
    try:
        return time_config(sets, config, reps)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        print(f"  FAIL {config}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        return float("nan")


def screen(sets: list[dict[str, Any]], configs: list[dict[str, Any]], reps: int,
           deadline: float) -> list[tuple[float, dict[str, Any]]]:
    """(us, config) of each config that runs (``time_config`` with ``reps`` replays), in order, until
    ``deadline``; a failing config is reported and left out."""
    results = []
    for config in configs:
        if time.time() > deadline:
            break
        us = _time_or_nan(sets, _plain(config), reps)
        if math.isfinite(us):
            results.append((us, config))
    return results


def bench_problem(name: str, p: MoEProblem, configs: list[dict[str, Any]], copy_bw: float, reps: int,
                  screened: int) -> dict[str, Any]:
    """The table's row of one problem: ``configs`` (the shortlist, its refinements, SGLang's set) and both
    defaults timed with ``reps`` replays; ``screened`` is how many configs the screen timed."""
    n_sets = rotated_sets(p)
    sets = _sets(p, n_sets, seed=p.M)
    active = active_bytes(p, sets)
    results = screen(sets, configs, reps, math.inf)
    default_configs = configs_of_defaults(p)
    defaults = {key: _time_or_nan(sets, config, reps) for key, config in default_configs.items()}
    ref_ms = statistics.median(_events_ms(lambda: fused_moe_ref(**sets[0]), 3))
    row: dict[str, Any] = dict(model=name, M=p.M, n_sets=n_sets, active_mb=active / 1e6, ref_us=ref_ms * 1e3,
                               tried=screened, final=len(results), **defaults)
    # The defaults are configs of the space too: "tuned" is never slower than what runs without a bundle.
    results += [(defaults[key], dict(config, _default=key)) for key, config in default_configs.items()
                if math.isfinite(defaults[key])]
    if results:
        best_us, best = min(results, key=lambda r: r[0])
        fastest = {path: min((r for r in results if r[1]["PATH"] == path), key=lambda r: r[0])
                   for path in sorted({r[1]["PATH"] for r in results})}
        row["best_by_path"] = {path: (round(us, 1), _plain(c)) for path, (us, c) in fastest.items()}
        sg = [r for r in results if r[1].get("_sglang")]
        row.update(best_us=best_us, best=_plain(best), frac=active / (best_us * 1e-6) / copy_bw)
        if sg:
            sg_us, sg_cfg = min(sg, key=lambda r: r[0])
            row.update(sglang_us=sg_us, sglang=_plain(sg_cfg))
        out = fused_moe(**sets[0], config=_plain(best))
        row["rel_err"] = rel_error(out, fused_moe_ref(**sets[0]))
    del sets
    torch.cuda.empty_cache()
    return row


def screen_problem(p: MoEProblem, configs: list[dict[str, Any]], reps: int, keep: int,
                   deadline: float) -> tuple[list[dict[str, Any]], int]:
    """The shortlist of one problem's screen (``shortlist`` of ``screen`` over its rotated sets) and how
    many configs were timed."""
    sets = _sets(p, rotated_sets(p), seed=p.M)
    results = screen(sets, screen_order(p, configs), reps, deadline)
    del sets
    torch.cuda.empty_cache()
    return shortlist(results, keep), len(results)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results as a markdown table (times in microseconds, BW frac of the measured copy bandwidth)."""
    print("\n| model | M | tuned (us) | best SGLang (us) | gap | torch ref (us) | active MB | BW frac | rel err "
          "| space default (us) | runtime default (us) | tuned config |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in rows:
        gap = f"{r['sglang_us'] / r['best_us']:.2f}x" if "sglang_us" in r else "n/a"
        print(f"| {r['model']} | {r['M']} | {r.get('best_us', nan):.1f} | {r.get('sglang_us', nan):.1f} | {gap}"
              f" | {r['ref_us']:.0f} | {r['active_mb']:.1f} | {r.get('frac', nan):.2f}"
              f" | {r.get('rel_err', nan):.1e} | {r['default_us']:.1f} | {r['runtime_default_us']:.1f}"
              f" | {r.get('best')} |")
    print("\n| model | M | fastest per PATH (us: config) |\n|---|---|---|")
    for r in rows:
        per = "; ".join(f"{k} {us}: BN{c['BLOCK_N']} BK{c['BLOCK_K']} w{c['num_warps']} s{c['num_stages']}"
                        f" BM{c['BLOCK_M']} SK{c['SPLIT_K']} {c['DEQ']}"
                        for k, (us, c) in r.get("best_by_path", {}).items())
        print(f"| {r['model']} | {r['M']} | {per} |")


def compiled(plans: dict[tuple[str, int], list[dict[str, Any]]],
             problems: dict[tuple[str, int], MoEProblem]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """``plans`` less the configs that do not compile for this GPU (``precompile``; the dropped ones are
    printed). If compilation itself fails, every config is kept and the JIT compiles."""
    start = time.time()
    jobs = [(key, c) for key, configs in plans.items() for c in configs]
    try:
        statuses = precompile([(problems[key].to_dict(), c) for key, c in jobs])
    except Exception as exc:  # noqa: BLE001 - the JIT compiles instead, slower
        print(f"# precompile failed ({type(exc).__name__}: {exc}); the JIT compiles", flush=True)
        statuses = ["ok"] * len(jobs)
    dropped = [(key, c, status) for (key, c), status in zip(jobs, statuses) if status != "ok"]
    print(f"# precompiled {len(jobs)} candidates in {time.time() - start:.0f} s, {len(dropped)} dropped", flush=True)
    for key, c, status in dropped[:20]:
        print(f"  dropped {_plain(c)} at {key}: {status[:160]}")
    bad = {(key, json.dumps(c, sort_keys=True)) for key, c, _ in dropped}
    return {key: [c for c in configs if (key, json.dumps(c, sort_keys=True)) not in bad]
            for key, configs in plans.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15, help="replays per timing of the final round")
    parser.add_argument("--screen-reps", type=int, default=3, help="replays per timing of the screen")
    parser.add_argument("--keep", type=int, default=6, help="screened configs per problem refined and re-timed")
    parser.add_argument("--budget-s", type=float, default=300.0, help="seconds for the screen of all problems")
    parser.add_argument("--json", default="")
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma-separated M values")
    parser.add_argument("--paths", default="decode,prefill,gemv,mma", help="PATH values swept (SGLang's set always)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names of MODELS")
    args = parser.parse_args()
    start = time.time()
    tokens, paths = [int(m) for m in args.tokens.split(",")], set(args.paths.split(","))
    problems = {(n, m): MoEProblem(M=m, **MODELS[n]) for n in args.models.split(",") for m in tokens}
    plans = compiled({key: [c for c in sweep(p) if c.get("_sglang") or c["PATH"] in paths]
                      for key, p in problems.items()}, problems)
    print(f"# {torch.cuda.get_device_name()}: screening {sum(map(len, plans.values()))} configs", flush=True)
    copy_bw, tflops = copy_bandwidth(), matmul_tflops()
    print(f"# copy bandwidth {copy_bw / 1e9:.0f} GB/s (read+write), bf16 matmul {tflops:.0f} TFLOP/s", flush=True)
    # 1. screen every config with few replays (the budget starts after the precompile)
    deadline, screened, finals = time.time() + args.budget_s, {}, {}
    for i, (key, p) in enumerate(problems.items()):
        share = time.time() + (deadline - time.time()) / (len(problems) - i)
        best, screened[key] = screen_problem(p, plans[key], args.screen_reps, args.keep, share)
        pdl = p.M <= 32 and torch.cuda.get_device_capability() >= (9, 0)
        finals[key] = best + [r for c in best for r in refinements(p, c, pdl)]
        finals[key] += [c for c in plans[key] if c.get("_sglang") and c not in finals[key]]
        print(f"# {key}: screened {screened[key]}, shortlist {[_plain(c) for c in best[:3]]} ...", flush=True)
    # 2. the shortlists, their refinements and SGLang's set, timed again with the full replays
    finals = compiled(finals, problems)
    rows = []
    for key, p in problems.items():
        rows.append(bench_problem(key[0], p, finals[key], copy_bw, args.reps, screened[key]))
        print(json.dumps(rows[-1]), flush=True)
        if args.json:  # after every row: a run cut short keeps the rows it finished
            with open(args.json, "w") as handle:
                json.dump(dict(copy_bw=copy_bw, tflops=tflops, rows=rows), handle, indent=1)
    print(f"# done in {time.time() - start:.0f} s", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
