"""Triton's once-per-process start-up work, done before the first kernel launch (optionally on a thread).

With a bundle's compiled kernels installed, the first launch of a kernel in a fresh process still spent
160-300 ms inside Triton before the GPU ran anything (cProfile on an H200, BENCHMARKS.md):
- importing ``triton.experimental.gluon``, which the JIT's argument specialization imports lazily at the
  first launch (110-175 ms; most of it compiling the modules' Python source where no bytecode is cached),
- ``ptxas --version``, part of the backend hash of every cache key (about 20 ms), and ``file`` on the
  Python executable, part of the key of Triton's host modules (``platform.architecture``, about 15 ms),
- the AST walk behind each JIT function's ``cache_key`` (15-26 ms per kernel module),
- torch's own first reductions (the MoE launcher's expert-id check loads them, about 20 ms),
- and ``triton_key()`` (about 0.4 s), unless its opt-in store is on (``triton_key.py``).
``warm_up()`` does all of these now; ``start_warm_up()`` does them on a daemon thread, so that a serving
process overlaps them with loading its weights. Nothing here changes what a launch computes or which
binary it uses: every step only fills a cache Triton (or torch) would fill at the first launch anyway.
Triton's CUDA driver object is not created here: it would build Triton's host module with the C
compiler before the loader could install the one a bundle ships.
"""
from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterable

import torch
from triton.runtime.jit import JITFunction

from aotune.kernels.base import get_kernel, kernel_names

# The module the JIT's specialization imports at the first launch (Triton 3.6, for its tensor descriptors).
_LAZY_TRITON_MODULE = "triton.experimental.gluon.nvidia.hopper"


def _jit_functions(names: Iterable[str]) -> list[JITFunction]:
    """Every ``@triton.jit`` function in the source modules of the kernels ``names``."""
    found: dict[int, JITFunction] = {}
    for name in names:
        for module_name in get_kernel(name).source_modules:
            module = importlib.import_module(module_name)
            for value in vars(module).values():
                if isinstance(value, JITFunction):
                    found[id(value)] = value
    return list(found.values())


def _backend_hash() -> None:
    """Triton's backend hash for the current GPU (runs ``ptxas --version`` once; Triton caches it)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    major, minor = torch.cuda.get_device_capability()
    make_backend(GPUTarget("cuda", 10 * major + minor, 32)).hash()


def _torch_reductions() -> None:
    """The torch kernels of the MoE launcher's host check of the expert ids (loaded lazily by CUDA)."""
    ids = torch.zeros(1, dtype=torch.int32, device="cuda")
    bool((ids >= 1).any())


def warm_up(kernels: Iterable[str] | None = None) -> dict[str, float]:
    """Do Triton's per-process first-launch work for ``kernels`` (default: all registered) now.

    Returns the seconds each step took. Safe to call more than once (later calls find the caches full) and
    on a machine without a GPU (the GPU steps are skipped)."""
    names = list(kernels) if kernels is not None else kernel_names()
    steps: dict[str, float] = {}

    def timed(label: str, step) -> None:
        start = time.perf_counter()
        step()
        steps[label] = time.perf_counter() - start

    timed("import_gluon", lambda: importlib.import_module(_LAZY_TRITON_MODULE))
    timed("triton_key", lambda: importlib.import_module("triton.runtime.cache").triton_key())
    timed("jit_cache_keys", lambda: [fn.cache_key for fn in _jit_functions(names)])
    timed("platform_key", importlib.import_module("triton.runtime.build").platform_key)  # runs `file` once
    if torch.cuda.is_available():
        timed("backend_hash", _backend_hash)
        timed("torch_reductions", _torch_reductions)
    return steps


def start_warm_up(kernels: Iterable[str] | None = None) -> threading.Thread:
    """``warm_up`` on a daemon thread, started now; ``join()`` it to wait. A launch that starts earlier is
    still correct: Python's import lock serializes the imports and the other steps only fill caches."""
    names = list(kernels) if kernels is not None else None
    thread = threading.Thread(target=warm_up, args=(names,), name="aotune-warm-up", daemon=True)
    thread.start()
    return thread
