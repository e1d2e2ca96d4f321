"""A GPU actor killed by hand (``ray.kill``) during a real GPU tuning job: the job completes, the database
stays consistent, and running the job again records nothing new.

Usage on a GPU machine: python tests/bench/bench_gpu_kill.py [GRID] [--kill-after-s 20] [--strategy halving]
Checks (each printed, exit code 1 if one fails): a worker was killed while it held a trial; every problem
of the grid has a best config; no (problem, config, stage) has two trial rows; a second run of the same
job finds every problem done and commits no trial.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter

import ray

from aotune.cache_db.schema import TrialRow
from aotune.cache_db.store import Store
from aotune.tuner.driver import TuneSettings
from aotune.tuner.grid import load_grid, plan
from aotune.tuner.jobs import JobOptions, init_ray, run_job
from aotune.workers.pool import WorkerPool, local_specs


def _kill_later(pool: WorkerPool, after_s: float, log: list[str]) -> threading.Thread:
    """Kill the first GPU actor found busy ``after_s`` seconds into the job."""

    def kill() -> None:
        time.sleep(after_s)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name, slot in list(pool.slots.items()):
                if slot.ref is not None:
                    ray.kill(slot.handle, no_restart=True)
                    task = "building inputs" if slot.tag.request is None else slot.tag.request
                    log.append(f"killed {name} (pid {slot.info.get('pid')}) while {task}")
                    return
            time.sleep(0.01)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _trial_keys(url: str) -> Counter:
    with Store(url).session() as session:
        rows = session.query(TrialRow.problem_id, TrialRow.device_id, TrialRow.config_key, TrialRow.stage).all()
    return Counter(tuple(r) for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("grid", nargs="?", default="selftest-gpu")
    parser.add_argument("--db", default="sqlite:////tmp/aotune-kill.db")
    parser.add_argument("--kill-after-s", type=float, default=20.0)
    parser.add_argument("--strategy", default="halving")
    parser.add_argument("--interpreter", action="store_true", help="CPU interpreter workers (to try the script)")
    args = parser.parse_args()
    init_ray(None)
    options = JobOptions(grid=args.grid, db=args.db, interpreter=args.interpreter,
                         settings=TuneSettings(strategy=args.strategy))
    pool = WorkerPool(local_specs(interpreter=args.interpreter))
    log: list[str] = []
    thread = _kill_later(pool, args.kill_after_s, log)
    try:
        first = run_job(options, pool=pool)
    finally:
        pool.shutdown()
    thread.join()
    keys = _trial_keys(args.db)
    best = Store(args.db).best()
    second = run_job(options)
    problems = len(plan(load_grid(args.grid), None))
    checks = {
        "a busy GPU actor was killed": bool(log),
        "no problem left unfinished (setup failures)": all(not p.statuses["setup_failed"]
                                                           for p in first.progress.values()),
        "every problem has a best config after the first run": len(best) == problems * len(first.progress),
        "no trial recorded twice": all(n == 1 for n in keys.values()),
        "the rerun committed no trial": sum(p.trials for p in second.progress.values()) == 0,
        "the rerun found every problem done": all(p.problems_done == problems for p in second.progress.values()),
    }
    print("\n".join(log))
    for key, p in first.progress.items():
        print(f"first run on {key}: {p.trials} trials {dict(p.statuses)} in {first.wall_s:.1f} s")
    print(f"rerun: {sum(p.trials for p in second.progress.values())} trials in {second.wall_s:.1f} s; "
          f"{len(keys)} distinct trial keys")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
