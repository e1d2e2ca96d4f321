"""Time from import to first result, per kernel, in fresh processes with an empty Triton cache (GPU).

Modes (each a fresh Python process, ``TRITON_CACHE_DIR`` a new empty folder):
  autotune  - what ``@triton.autotune`` does at the first call: compile and benchmark every candidate
              (``triton.testing.do_bench`` with autotune's defaults, warmup 25 ms, rep 100 ms), then run
              the winner. Over the first ``--autotune-configs`` valid configs of the kernel's space
              (the full space would take minutes per kernel), so it is a lower bound.
  configs   - the loader with a bundle holding this problem's config, no binaries: the JIT compiles it.
  binaries  - the loader with a bundle that also ships the compiled kernel (Triton cache entries: cubins
              and, built on this GPU machine, Triton's host launch modules).
  binaries+key - binaries, with ``AOTUNE_TRITON_KEY_CACHE=1`` and the install hash stored by an
              earlier process (``aotune.kernels.triton_key``).
  binaries+key+warm - binaries+key, and ``aotune.kernels.warmup.warm_up`` started on a thread right after
              the import (it overlaps the input set-up, as it would overlap loading weights in a server);
              the first call does not wait for it, so whatever is left of it is in ``first``.
Times: ``import`` (torch + the kernel module), ``triton key`` (Triton's once-per-process hash of its own
install, ``triton.runtime.cache.triton_key``: sha256 over libtriton.so and its compiler sources, paid at
the first JIT launch of any Triton kernel in a process; timed apart here), ``first`` (from the call with
config=None to the synchronized result; input creation excluded), and their sum. Driver stubs Triton builds with the
host C compiler on first use (cuda_utils, per-signature launchers) are part of ``first`` in the modes
without binaries.

Run on the GPU machine: ``python tests/bench/bench_first_launch.py [--kernels selftest,...] [--modes binaries+key]
[--profile-dir DIR]`` (``--profile-dir``: a cProfile of each first call, top 40 by cumulative time).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLES = {
    "selftest": {"M": 48, "N": 256, "K": 96},
    "mxfp4_moe": {"M": 4, "K": 4096, "I": 256, "E": 32, "top_k": 4},
    "flash_mla": {"B": 8, "S_q": 1, "H": 64, "topk": 512, "layout": "v4", "page_size": 256},
    "mqa_logits": {"B": 8, "N": 1, "H": 64, "D": 128, "context": 4096},
}

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import torch
from aotune.kernels import get_kernel
kernel = get_kernel(sys.argv[1])
t1 = time.perf_counter()
mode = sys.argv[3]
warm = {}
if mode.endswith("+warm"):  # Triton's per-process start-up work on a thread, overlapping the set-up below
    import threading
    from aotune.kernels.warmup import warm_up
    warm_thread = threading.Thread(target=lambda: warm.update(warm_up([sys.argv[1]])), daemon=True)
    warm_thread.start()
problem = kernel.problem(json.loads(sys.argv[2]))
inputs = kernel.make_inputs(problem, 0, "cuda")
torch.cuda.synchronize()
warm_done = bool(warm)
tk = time.perf_counter()
from triton.runtime.cache import triton_key
triton_key()  # Triton's once-per-process hash of its own install (sha256 of libtriton.so among others)
t2 = time.perf_counter()
if mode == "autotune":
    import triton.testing
    configs = json.loads(sys.argv[4])
    times = [triton.testing.do_bench(lambda c=c: kernel.run(inputs, c), warmup=25, rep=100) for c in configs]
    out = kernel.run(inputs, configs[times.index(min(times))])
else:
    profile_to = os.environ.get("BENCH_PROFILE")
    if profile_to:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    out = kernel.run(inputs, None)
torch.cuda.synchronize()
t3 = time.perf_counter()
if mode != "autotune" and profile_to:  # written after t3: not part of the timed first call
    profiler.disable()
    import io, pstats
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    with open(profile_to, "w") as handle:
        handle.write(text.getvalue())
from aotune.kernels.runtime import resolve
from aotune.kernels.device import device_class
source = "autotune" if mode == "autotune" else resolve(kernel, problem, device_class(None)).source
if mode.endswith("+warm"):
    warm_thread.join()
print(json.dumps({"import_ms": 1e3 * (t1 - t0), "key_ms": 1e3 * (t2 - tk), "first_ms": 1e3 * (t3 - t2),
                  "source": source, "warm_ms": 1e3 * sum(warm.values()) if warm else None,
                  "warm_done_before_call": warm_done}))
"""

PREPARE = r"""
import json, sys
from aotune.cache_db.bundle import DeviceModel, Entry, new_bundle, write_bundle
from aotune.kernels import get_kernel
from aotune.kernels.device import device_class
from aotune.kernels.runtime import fallback_configs
from aotune.tuner.cli_bundle import binary_for
name, problem, folder, n = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
kernel = get_kernel(name)
typed = kernel.problem(problem)
device = device_class(None)
configs = [c for c in [dict(kernel.space.default)] + [c for c in kernel.space.configs()]
           if kernel.space.check(c, typed) is None]
config = fallback_configs(kernel.space, typed)[0]
binary = binary_for(name, typed.to_dict(), config, device.arch)
for label, binaries in (("configs", []), ("binaries", [binary] if binary else [])):
    entry = Entry(kernel=name, kernel_version=kernel.version, device=device.key, problem_key=typed.key,
                  problem=typed.to_dict(), config=config, median_us=1.0, binaries=binaries)
    write_bundle(new_bundle([entry], {device.key: DeviceModel(**device.to_dict())}), f"{folder}/{label}.json")
seen, picked = set(), []
for c in configs:
    key = json.dumps(c, sort_keys=True)
    if key not in seen:
        seen.add(key)
        picked.append(c)
print(json.dumps({"autotune": picked[:n], "has_binary": binary is not None}))
"""


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "-c", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout.strip().splitlines()[-1]


MODES = ("autotune", "configs", "binaries", "binaries+key", "binaries+key+warm")


def bench(name: str, autotune_configs: int, modes: tuple[str, ...] = MODES, profile_dir: str = "") -> list[dict]:
    problem = json.dumps(SAMPLES[name])
    base = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "AOTUNE_BUNDLES")}
    with tempfile.TemporaryDirectory() as tmp:
        prep = json.loads(run([PREPARE, name, problem, tmp, str(autotune_configs)],
                              {**base, "TRITON_CACHE_DIR": f"{tmp}/prep-cache", "AOTUNE_TRITON_KEY_CACHE": "1",
                               "AOTUNE_TRITON_KEY_DIR": f"{tmp}/keys"}))
        rows = []
        for mode in modes:
            env = {**base, "TRITON_CACHE_DIR": f"{tmp}/cache-{mode}",
                   "AOTUNE_BUNDLES": f"{tmp}/{mode.split('+')[0]}.json" if mode != "autotune" else ""}
            if mode.startswith("binaries+key"):  # the install hash stored by an earlier process (the prepare step)
                env.update(AOTUNE_TRITON_KEY_CACHE="1", AOTUNE_TRITON_KEY_DIR=f"{tmp}/keys")
            if profile_dir and mode != "autotune":  # cProfile of the first call (slower: read only the shares)
                env["BENCH_PROFILE"] = f"{profile_dir}/{name}-{mode.replace('+', '_')}.txt"
            extra = [json.dumps(prep["autotune"])] if mode == "autotune" else []
            result = json.loads(run([CHILD, name, problem, mode, *extra], env))
            bundle = Path(tmp, f"{mode.split('+')[0]}.json")
            rows.append({"kernel": name, "mode": mode, **result,
                         "bundle_kb": round(bundle.stat().st_size / 1024) if bundle.exists() else "",
                         "configs": len(prep["autotune"]) if mode == "autotune" else 1,
                         "has_binary": prep["has_binary"]})
        return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", default=",".join(SAMPLES))
    parser.add_argument("--autotune-configs", type=int, default=8)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--profile-dir", default="", help="write a cProfile of each first call here")
    args = parser.parse_args()
    print("| kernel | mode | configs | bundle KB | import ms | triton key ms | first result ms | total ms | answer source "
          "| warm-up ms (done before the call) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.kernels.split(","):
        try:
            rows = bench(name, args.autotune_configs, tuple(args.modes.split(",")), args.profile_dir)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next kernel
            print(f"| {name} | failed | | | | | | | {type(exc).__name__}: {str(exc)[-300:]!r} |")
            continue
        for r in rows:
            binary = "" if not r["mode"].startswith("binaries") or r["has_binary"] else " (no binary compiled)"
            total = r["import_ms"] + r["key_ms"] + r["first_ms"]
            warm = "" if r.get("warm_ms") is None else f"{r['warm_ms']:.0f} ({'yes' if r['warm_done_before_call'] else 'no'})"
            print(f"| {r['kernel']} | {r['mode']}{binary} | {r['configs']} | {r['bundle_kb']} | {r['import_ms']:.0f} | "
                  f"{r['key_ms']:.0f} | {r['first_ms']:.0f} | {total:.0f} | {r['source']} | {warm} |", flush=True)


if __name__ == "__main__":
    main()
