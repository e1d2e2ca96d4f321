"""Tuner throughput on the GPUs of this machine: trials per GPU-minute, worker busy fraction, tuned vs default.

Usage: python tests/bench/bench_tuner.py GRID [--db URL] [--strategy exhaustive] [--workers N]
Prints one JSON line of job figures and a table of best vs default per problem.
"""
from __future__ import annotations

import argparse
import json
import time

from aotune.cache_db.store import Store
from aotune.tuner.driver import TuneSettings
from aotune.tuner.jobs import JobOptions, run_job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("grid")
    parser.add_argument("--db", default="sqlite:////tmp/aotune-bench.db")
    parser.add_argument("--strategy", default="exhaustive")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    start = time.monotonic()
    result = run_job(JobOptions(grid=args.grid, db=args.db, workers=args.workers,
                                settings=TuneSettings(strategy=args.strategy)))
    for key, p in result.progress.items():
        gpu_minutes = result.wall_s / 60 * p.workers
        print(json.dumps({
            "device": key, "workers": p.workers, "problems": p.problems_done, "trials": p.trials,
            "statuses": dict(p.statuses), "job_wall_s": round(result.wall_s, 2),
            "wall_with_ray_start_s": round(time.monotonic() - start, 2),
            "trials_per_gpu_minute": round(p.trials / gpu_minutes, 1),
            "timed_trials_per_gpu_minute": round(p.statuses.get("ok", 0) / gpu_minutes, 1),
            "worker_busy_fraction": round(p.busy_s / (result.wall_s * p.workers), 3),
        }))
    print(f"{'problem':32} {'best us':>9} {'default us':>10} {'speedup':>8}  config")
    for row in Store(args.db).best():
        default = row["default_median_us"]
        speedup = f"{default / row['median_us']:.2f}x" if default else "-"
        print(f"{row['problem_key']:32} {row['median_us']:9.2f} {default or float('nan'):10.2f} {speedup:>8}  "
              f"{json.dumps(row['config'])}")


if __name__ == "__main__":
    main()
