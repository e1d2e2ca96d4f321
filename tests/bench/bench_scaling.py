"""Scaling of one grid over 1..N GPUs of this machine: wall time, trials per GPU-minute, worker busy fraction.

Usage: python tests/bench/bench_scaling.py GRID --workers 8,4,2,1 [--strategy random --samples 8] [-k KERNEL]
Runs the grid once per worker count, each into a fresh SQLite database, in the order given (the first run
pays for Triton's on-disk compile cache; list the largest count first so the comparison is conservative).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from aotune.tuner.driver import TuneSettings
from aotune.tuner.jobs import JobOptions, init_ray, run_job


def _printer(every_s: float = 20.0):
    """A progress callback that prints one line per device class every ``every_s`` seconds."""
    last = [time.monotonic()]

    def show(progress: dict) -> None:
        if time.monotonic() - last[0] < every_s:
            return
        last[0] = time.monotonic()
        for key, p in progress.items():
            print(f"  [{time.strftime('%H:%M:%S')}] {key}: problems {p.problems_done}/{p.problems_total}, "
                  f"trials {p.trials}, statuses {dict(p.statuses)}", flush=True)
    return show


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("grid")
    parser.add_argument("--workers", default="8,4,2,1")
    parser.add_argument("--strategy", default="random")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("-k", "--kernels", action="append", default=[])
    parser.add_argument("--compile-ahead", type=int, default=TuneSettings().compile_ahead)
    parser.add_argument("--interpreter", action="store_true", help="CPU interpreter workers (to try the script)")
    args = parser.parse_args()
    init_ray(None)
    options = {"samples": args.samples} if args.strategy == "random" else {}
    rows = []
    for count in (int(w) for w in args.workers.split(",")):
        db = os.path.join(tempfile.mkdtemp(), "scaling.db")
        settings = TuneSettings(strategy=args.strategy, strategy_options=options, compile_ahead=args.compile_ahead)
        result = run_job(JobOptions(grid=args.grid, db=f"sqlite:///{db}", workers=count, interpreter=args.interpreter,
                                    kernels=tuple(args.kernels), settings=settings), _printer())
        trials = sum(p.trials for p in result.progress.values())
        busy = sum(p.busy_s for p in result.progress.values())
        rows.append({"gpus": count, "problems": result.problems, "trials": trials, "wall_s": round(result.wall_s, 1),
                     "trials_per_gpu_minute": round(trials / (result.wall_s / 60 * count), 1),
                     "worker_busy": round(busy / (result.wall_s * count), 3),
                     "statuses": {k: v for p in result.progress.values() for k, v in p.statuses.items()}})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in rows if r["gpus"] == 1), None)
    print(f"{'gpus':>4} {'wall s':>8} {'trials':>7} {'trials/GPU-min':>15} {'busy':>6} {'efficiency vs 1 GPU':>20}")
    for r in rows:
        eff = f"{base['wall_s'] / (r['wall_s'] * r['gpus']):.0%}" if base else "-"
        print(f"{r['gpus']:>4} {r['wall_s']:>8} {r['trials']:>7} {r['trials_per_gpu_minute']:>15} "
              f"{r['worker_busy']:>6.0%} {eff:>20}")


if __name__ == "__main__":
    main()
