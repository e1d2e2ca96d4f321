"""One trial, as it runs inside a worker: correctness against the reference first, then timing.

``run_trial`` is the callable the tuner hands a worker. Inputs and the reference output are built once
per workload and kept for the next trials of the same problem. A kernel error is classified into a
status; a CUDA error that poisons the context asks the driver to restart the worker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aotune.tuner.feasibility import interpreting
from aotune.tuner.timing import DEFAULT_TIMING, TimingSettings, input_sets_needed, time_cuda, time_interpreter


@dataclass(frozen=True)
class TrialSpec:
    kernel: str
    problem: dict[str, Any]
    config: dict[str, Any]
    stage: str = "final"
    timing: TimingSettings = DEFAULT_TIMING
    seed: int = 0
    artifacts: list[dict[str, bytes]] = field(default_factory=list)


@dataclass
class TrialOutcome:
    status: str
    error: float | None = None
    median_us: float | None = None
    p20_us: float | None = None
    p80_us: float | None = None
    times_us: list[float] | None = None
    timing_method: str | None = None
    message: str | None = None
    restart_worker: bool = False


_WORKLOAD: dict[str, tuple[list[Any], Any]] = {}
_WORKLOADS_KEPT = 2


def install_artifacts(artifacts: list[dict[str, bytes]]) -> None:
    """Put compiled kernels (Triton cache entries) into this process's Triton cache: the JIT then loads
    them instead of compiling. Existing files are left alone."""
    if not artifacts:
        return
    from triton import knobs

    from aotune.kernels.runtime import install_cache_entry

    for files in artifacts:
        if "__dir__" in files:
            entry = {name: data for name, data in files.items() if name != "__dir__"}
            install_cache_entry(Path(knobs.cache.dir), files["__dir__"].decode(), entry)


def _workload(kernel: Any, problem: Any, seed: int, settings: TimingSettings) -> tuple[list[Any], Any]:
    """Input sets (rotated while timing) and the reference output, built once per workload.

    The last ``_WORKLOADS_KEPT`` workloads stay in memory, so a worker that alternates between two
    problems does not rebuild their inputs and references.
    """
    key = f"{kernel.name}:{kernel.version}:{problem.key}:{seed}"
    if key in _WORKLOAD:
        _WORKLOAD[key] = _WORKLOAD.pop(key)  # most recently used last
        return _WORKLOAD[key]
    while len(_WORKLOAD) >= _WORKLOADS_KEPT:
        _WORKLOAD.pop(next(iter(_WORKLOAD)))
    device = "cpu" if interpreting() else "cuda"
    first = kernel.make_inputs(problem, seed, device)
    reference = kernel.reference(first)
    sets = [first]
    if not interpreting():
        wanted = input_sets_needed(_bytes_of(first), settings)
        sets += [kernel.make_inputs(problem, seed + i, device) for i in range(1, wanted)]
    _WORKLOAD[key] = (sets, reference)
    return sets, reference


def _bytes_of(inputs: dict[str, Any]) -> int:
    import torch

    return sum(v.numel() * v.element_size() for v in inputs.values() if isinstance(v, torch.Tensor))


def _synchronize() -> None:
    if not interpreting():
        import torch

        torch.cuda.synchronize()


def prepare_workload(spec: TrialSpec) -> float:
    """Build (or find) the workload's input sets and reference on this worker; returns the seconds taken.

    The driver calls this before a worker's first trial of a problem, under its own timeout, so that a
    trial's timeout never pays for the reference computation.
    """
    import time

    from aotune.kernels import get_kernel

    start = time.perf_counter()
    kernel = get_kernel(spec.kernel)
    _workload(kernel, kernel.problem(spec.problem), spec.seed, spec.timing)
    _synchronize()
    return time.perf_counter() - start


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Check one config against the reference, then time it. Never raises for a kernel's own failure."""
    from aotune.kernels import get_kernel
    from aotune.tuner.failures import classify_run_error

    kernel = get_kernel(spec.kernel)
    problem = kernel.problem(spec.problem)
    install_artifacts(spec.artifacts)
    try:
        sets, reference = _workload(kernel, problem, spec.seed, spec.timing)
        out = kernel.run(sets[0], spec.config)
        _synchronize()
        error = kernel.compare(out, reference)
        if not (error <= kernel.tolerance):  # NaN and inf fail
            return TrialOutcome("mismatch", error=None if math.isnan(error) else error,
                                message=f"relative error {error:.3g} > tolerance {kernel.tolerance:g}")
        if interpreting():
            timing = time_interpreter(lambda: kernel.run(sets[0], spec.config))
        else:
            calls = [lambda s=s: kernel.run(s, spec.config) for s in sets]
            timing = time_cuda(calls, spec.timing, graph=kernel.timing == "graph")
    except Exception as exc:  # noqa: BLE001 - classified; unknown kinds re-raise inside the classifier
        status, message = classify_run_error(exc)
        poisoned = "cuda" in message.lower() and not interpreting()
        return TrialOutcome(status, message=message, restart_worker=poisoned)
    return TrialOutcome("ok", error=error, median_us=timing.median_us, p20_us=timing.p20_us,
                        p80_us=timing.p80_us, times_us=timing.times_us, timing_method=timing.method)
