"""Starting a tuning job: Ray, the worker pool for this machine or cluster, the store, the driver."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aotune.cache_db.store import Store
from aotune.tuner.driver import ClassProgress, Driver, TuneSettings
from aotune.tuner.grid import load_grid, plan


@dataclass(frozen=True)
class JobOptions:
    grid: str = "smoke"
    db: str | None = None
    kernels: tuple[str, ...] = ()
    interpreter: bool | None = None  # None: use GPUs when Ray sees any, else the interpreter
    workers: int | None = None
    ray_address: str | None = None
    settings: TuneSettings = TuneSettings()


@dataclass(frozen=True)
class JobResult:
    job_id: int
    progress: dict[str, ClassProgress]
    wall_s: float
    problems: int


def init_ray(address: str | None) -> None:
    """Join ``address`` (``auto`` for a ``ray start`` cluster) or start a local instance."""
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}} if os.environ.get("PYTHONPATH") else None
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    else:
        ray.init(num_cpus=max(2, (os.cpu_count() or 1) + 1), include_dashboard=False, log_to_driver=False,
                 runtime_env=env)


def run_job(options: JobOptions, on_progress: Callable[[dict[str, ClassProgress]], None] | None = None,
            pool: Any = None) -> JobResult:
    """Tune ``options.grid`` and record everything; resumes whatever an earlier run recorded."""
    from aotune.workers.pool import WorkerPool, local_specs

    grid = load_grid(options.grid)
    problems = plan(grid, list(options.kernels) or None)
    if not problems:
        raise ValueError(f"grid {grid.name}: no problems for kernels {list(options.kernels)}")
    store = Store(options.db)
    store.init()
    init_ray(options.ray_address)
    own_pool = pool is None
    if own_pool:
        import ray

        interpreter = options.interpreter
        if interpreter is None:
            interpreter = ray.cluster_resources().get("GPU", 0) == 0
        pool = WorkerPool(local_specs(interpreter=interpreter, count=options.workers))
    job_id = store.start_job(grid.name, options.settings.strategy)
    start = time.monotonic()
    status = "failed"
    try:
        progress = Driver(store, pool, options.settings, job_id, on_progress).run(problems)
        status = "done"
    finally:
        store.finish_job(job_id, status)
        if own_pool:
            pool.shutdown()
    return JobResult(job_id, progress, time.monotonic() - start, len(problems))
