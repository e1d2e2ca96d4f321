"""Killing a pool's worker from outside while a job runs (tests of crash isolation and resume)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from aotune.tuner.jobs import JobOptions, JobResult, run_job
from aotune.workers.pool import WorkerPool, local_specs


def kill_when(pool: WorkerPool, busy_with: Callable[[Any], bool], *, delay_s: float = 0.0,
              poll_s: float = 0.001, timeout_s: float = 120.0) -> tuple[threading.Thread, list[str]]:
    """Start a thread that ``ray.kill``s the first worker whose running task's tag satisfies ``busy_with``
    (``delay_s`` after seeing it); returns the thread and the list it appends the killed worker's name to."""
    killed: list[str] = []

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, slot in list(pool.slots.items()):
                if slot.ref is not None and slot.tag is not None and busy_with(slot.tag):
                    time.sleep(delay_s)
                    ray.kill(slot.handle, no_restart=True)
                    killed.append(name)
                    return
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


def smoke_job_with_a_kill(url: str, busy_with: Callable[[Any], bool],
                          **kill_options: float) -> tuple[JobResult, list[str], WorkerPool]:
    """Tune the smoke grid on interpreter workers into ``url`` while ``kill_when`` kills one of them;
    returns the job's result, the killed worker names and the (shut down) pool."""
    pool = WorkerPool(local_specs(interpreter=True))
    thread, killed = kill_when(pool, busy_with, **kill_options)
    try:
        result = run_job(JobOptions(grid="smoke", db=url, interpreter=True), pool=pool)
    finally:
        pool.shutdown()
    thread.join()
    return result, killed, pool
