"""Loader costs on this machine (CPU only): import time, bundle load, memoized and cold lookups.

Run: ``python tests/bench/bench_loader.py``. Prints a markdown table. Import times are medians over
fresh processes, timed inside them around the import statement; lookup times are medians of many
``time.perf_counter_ns`` batches.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aotune.cache_db import loader
from aotune.cache_db.bundle import DeviceModel, Entry, new_bundle, write_bundle
from aotune.cache_db.identity import DeviceClass

DEVICES = [DeviceClass("nvidia", "sm_90", "h100-80gb-hbm3", 232448, 132),
           DeviceClass("nvidia", "sm_90", "h200", 232448, 132),
           DeviceClass("nvidia", "sm_120", "geforce-rtx-5090", 101376, 170)]
M_VALUES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 2048, 4096)
SHAPES = [(4096, 2048), (7168, 2048), (2880, 2880), (7168, 256)]


def fresh_import_ms(statement: str, before: str = "pass", runs: int = 7) -> float:
    """Median wall time of ``statement`` in fresh processes, timed inside them after ``before`` ran."""
    code = (f"import time; {before}; t = time.perf_counter(); {statement}; "
            "print(time.perf_counter() - t)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["TRITON_INTERPRET"] = "0"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)  # writes the .pyc files
    return 1e3 * statistics.median(float(subprocess.run([sys.executable, "-c", code], check=True, env=env,
                                                        capture_output=True, text=True).stdout) for _ in range(runs))


def per_call_ns(fn: Callable[[], object], calls: int = 20000, batches: int = 15) -> float:
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def make_bundle(folder: Path) -> tuple[Path, int]:
    entries = [Entry(kernel="mxfp4_moe", kernel_version="v", device=d.key, problem_key=f"M={m},K={k},I={i}",
                     problem={"M": m, "K": k, "I": i, "E": 256, "top_k": 8}, median_us=10.0 + m,
                     config={"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 4,
                             "num_stages": 2}, shared_bytes=40960)
               for d in DEVICES for m in M_VALUES for k, i in SHAPES]
    bundle = new_bundle(entries, {d.key: DeviceModel(**d.to_dict()) for d in DEVICES})
    return write_bundle(bundle, folder / "bench.json"), len(entries)


def main() -> None:
    rows: list[tuple[str, str]] = []
    rows.append(("import aotune.cache_db.loader (fresh process)", f"{fresh_import_ms('import aotune.cache_db.loader'):.1f} ms"))
    rows.append(("import aotune.cache_db.loader after torch+triton (fresh process)",
                 f"{fresh_import_ms('import aotune.cache_db.loader', before='import torch, triton'):.1f} ms"))
    rows.append(("import aotune.kernels (fresh process, torch+triton)", f"{fresh_import_ms('import aotune.kernels'):.0f} ms"))
    rows.append(("import aotune.kernels.runtime (fresh process)", f"{fresh_import_ms('import aotune.kernels.runtime'):.0f} ms"))
    with tempfile.TemporaryDirectory() as tmp:
        path, count = make_bundle(Path(tmp))
        size_kb = path.stat().st_size / 1024
        h100 = DEVICES[0]
        problem = {"M": 64, "K": 4096, "I": 2048, "E": 256, "top_k": 8}
        loads = []
        for _ in range(20):
            source = loader.Loader([path], defaults=False)
            start = time.perf_counter_ns()
            source.lookup("mxfp4_moe", "v", problem, h100, bucketed="M")
            loads.append(time.perf_counter_ns() - start)
        rows.append((f"first lookup: read + verify + index a {count}-entry bundle ({size_kb:.0f} KiB)",
                     f"{statistics.median(loads) / 1e6:.2f} ms"))
        source = loader.Loader([path], defaults=False)
        source.lookup("mxfp4_moe", "v", problem, h100, bucketed="M")
        rows.append(("memoized lookup (Loader.lookup, same key)",
                     f"{per_call_ns(lambda: source.lookup('mxfp4_moe', 'v', problem, h100, bucketed='M')):.0f} ns"))

        def cold(prob: dict, device: DeviceClass, ladders: bool) -> Callable[[], object]:
            def run() -> object:
                source._memo.clear()
                if ladders:
                    source._buckets.clear()
                return source.lookup("mxfp4_moe", "v", prob, device, bucketed="M")
            return run
        between = {**problem, "M": 40}
        for label, prob, device, ladders in (
                ("cold lookup, exact hit", problem, h100, False),
                ("cold lookup, nearest (M=40 -> 48)", between, h100, False),
                ("cold lookup, nearest, its ladder built too (once per kernel, device and other fields)",
                 between, h100, True),
                ("cold lookup, same arch other product", problem, DeviceClass("nvidia", "sm_90", "h100-nvl", 232448,
                                                                              132), False),
                ("cold lookup, miss everywhere -> default", {**problem, "K": 1234}, DEVICES[2], False)):
            answer = cold(prob, device, ladders)()
            rows.append((f"{label} [{answer.source}]", f"{per_call_ns(cold(prob, device, ladders), 2000) / 1e3:.2f} us"))
    rows.extend(runtime_rows())
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def runtime_rows() -> list[tuple[str, str]]:
    import torch

    from aotune.kernels import get_kernel
    from aotune.kernels.runtime import resolve_config

    kernel = get_kernel("selftest")
    problem = kernel.problem({"M": 48, "N": 64, "K": 96})
    device = torch.device("cpu")
    resolve_config(kernel, problem, device)
    fresh = kernel.problem({"M": 48, "N": 64, "K": 96})
    return [("runtime.resolve_config, memoized (launcher path, returns a fresh dict)",
             f"{per_call_ns(lambda: resolve_config(kernel, fresh, device)):.0f} ns")]


if __name__ == "__main__":
    main()
