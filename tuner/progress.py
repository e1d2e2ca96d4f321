"""Rich progress view per device class (done / total, trials per minute, ETA, failures) and the summary."""
from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from aotune.tuner.driver import ClassProgress


def progress_table(progress: dict[str, ClassProgress]) -> Table:
    table = Table(title="aotune tune")
    for col in ("device class", "problems", "trials", "trials/min", "ETA", "busy", "failures"):
        table.add_column(col)
    for key, p in progress.items():
        elapsed = max(1e-9, time.monotonic() - p.started)
        rate = p.trials / elapsed * 60
        left = p.problems_total - p.problems_done
        eta = f"{left * elapsed / p.problems_done:.0f}s" if p.problems_done else "-"
        busy = p.busy_s / (elapsed * max(1, p.workers))
        failures = ", ".join(f"{s}={n}" for s, n in sorted(p.statuses.items()) if s != "ok") or "-"
        table.add_row(key, f"{p.problems_done}/{p.problems_total}", str(p.trials), f"{rate:.0f}", eta,
                      f"{busy:.0%}", failures)
    return table


class ProgressView:
    """A live table, refreshed by ``update`` (the driver's progress callback)."""

    def __init__(self, console: Console) -> None:
        self.live = Live(Table(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> ProgressView:
        self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.live.__exit__(kind, exc, tb)

    def update(self, progress: dict[str, ClassProgress]) -> None:
        self.live.update(progress_table(progress))


def summary_table(result: Any) -> Table:
    table = Table(title=f"job {result.job_id}: {result.problems} problems in {result.wall_s:.1f} s")
    for col in ("device class", "problems done", "trials", "trials per worker-minute", "worker busy", "statuses"):
        table.add_column(col)
    for key, p in result.progress.items():
        minutes = result.wall_s / 60 * max(1, p.workers)
        table.add_row(key, f"{p.problems_done}/{p.problems_total}", str(p.trials), f"{p.trials / minutes:.0f}",
                      f"{p.busy_s / (result.wall_s * max(1, p.workers)):.0%}",
                      ", ".join(f"{s}={n}" for s, n in sorted(p.statuses.items())))
    return table
