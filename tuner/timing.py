"""Timing harness: warm-up excluded, inputs rotated so the L2 cache does not hold them, CUDA graphs for
small kernels (as they run in serving), median and spread of many samples.

On the CPU interpreter the same path runs and a wall-clock time is recorded as such (method
"interpreter": it exercises the loop, it is not a performance figure).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

L2_ROTATE_BYTES = 256 * 1024 * 1024  # rotate input sets until they span this much (H100/H200 L2: 50-60 MB)


@dataclass(frozen=True)
class TimingSettings:
    """How carefully to time: ``samples`` timed replays of ``reps`` launches each, after ``warmup`` launches."""

    warmup: int = 3
    reps: int = 20
    samples: int = 15
    max_input_sets: int = 8
    sample_us: float = 1000.0  # fewer reps per sample for slow configs, so a sample lasts about this long
    budget_us: float = 500_000.0  # fewer samples (at least 5) for very slow configs: timing ends in ~0.5 s


SCREEN = TimingSettings(warmup=2, reps=5, samples=5)
CAREFUL = TimingSettings(warmup=3, reps=20, samples=25)
DEFAULT_TIMING = CAREFUL


@dataclass(frozen=True)
class Timing:
    median_us: float
    p20_us: float
    p80_us: float
    times_us: list[float]
    method: str


def input_sets_needed(bytes_per_set: int, settings: TimingSettings) -> int:
    """How many distinct input sets to rotate so that together they exceed the L2 rotation size."""
    if bytes_per_set <= 0:
        return 1
    return max(1, min(settings.max_input_sets, -(-L2_ROTATE_BYTES // bytes_per_set)))


def _summary(times_us: list[float], method: str) -> Timing:
    ordered = sorted(times_us)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]  # noqa: E731
    return Timing(statistics.median(ordered), pick(0.2), pick(0.8), times_us, method)


def time_interpreter(call: Callable[[], Any]) -> Timing:
    start = time.perf_counter()
    call()
    return _summary([(time.perf_counter() - start) * 1e6], "interpreter")


def time_cuda(calls: Sequence[Callable[[], Any]], settings: TimingSettings, *, graph: bool) -> Timing:
    """Median per-launch time of ``calls`` (rotated), in a CUDA graph when ``graph`` (events otherwise)."""
    import torch

    for i in range(settings.warmup):
        calls[i % len(calls)]()
    torch.cuda.synchronize()
    settings = _adapt_reps(calls, settings)
    if graph:
        try:
            return _time_graph(calls, settings)
        except RuntimeError:  # capture not possible (host sync in the launcher): fall back to events
            torch.cuda.synchronize()
    return _time_events(calls, settings)


def _adapt_reps(calls: Sequence[Callable[[], Any]], settings: TimingSettings) -> TimingSettings:
    """Fewer launches per sample for slow configs (a sample lasts about ``sample_us``), and fewer samples
    for very slow ones (the timing lasts about ``budget_us``): a hopeless config costs little GPU time."""
    import dataclasses

    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(len(calls)):
        calls[i]()
    end.record()
    end.synchronize()
    estimate_us = start.elapsed_time(end) * 1e3 / len(calls)
    reps = max(1, min(settings.reps, int(settings.sample_us / max(estimate_us, 1e-3))))
    samples = max(5, min(settings.samples, int(settings.budget_us / max(estimate_us * reps, 1e-3))))
    return dataclasses.replace(settings, reps=reps, samples=samples)


def _time_graph(calls: Sequence[Callable[[], Any]], settings: TimingSettings) -> Timing:
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            for i in range(settings.reps):
                calls[i % len(calls)]()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(settings.samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / settings.reps)
    del graph
    return _summary(times, "cuda_graph")


def _time_events(calls: Sequence[Callable[[], Any]], settings: TimingSettings) -> Timing:
    import torch

    times = []
    for s in range(settings.samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(settings.reps):
            calls[(s * settings.reps + i) % len(calls)]()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / settings.reps)
    return _summary(times, "cuda_events")
