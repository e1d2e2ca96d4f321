"""The ``aotune`` command line: tune, space, best, db init, bundle (export/import/inspect/merge/transfer), query."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from aotune.tuner.cli_bundle import problem_pairs

app = typer.Typer(help="Ahead-of-time autotuning of Triton kernels on the GPUs you really run.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()


def _mount_bundle_commands() -> None:
    from aotune.tuner.cli_bundle import bundle_app, query_command

    app.add_typer(bundle_app, name="bundle", help="Export, import, inspect, merge and transfer bundles.")
    app.command("query")(query_command)


_mount_bundle_commands()


@app.command()
def tune(
    grid: str = typer.Argument("smoke", help="Grid file, or the name of a shipped grid (configs/grids)."),
    db: Optional[str] = typer.Option(None, help="SQLAlchemy URL (default: AOTUNE_DB or SQLite in the data dir)."),
    kernels: Optional[list[str]] = typer.Option(None, "--kernels", "-k", help="Only these kernels."),
    strategy: str = typer.Option("exhaustive", help="exhaustive, random or halving."),
    samples: int = typer.Option(16, help="Configs per problem for --strategy random (plus the default)."),
    interpreter: Optional[bool] = typer.Option(None, "--interpreter/--gpu",
                                               help="Force the CPU interpreter or GPUs (default: GPUs if any)."),
    workers: Optional[int] = typer.Option(None, help="Number of workers (default: one per GPU)."),
    ray_address: Optional[str] = typer.Option(None, help="Join a Ray cluster ('auto' for `ray start`)."),
    timeout: float = typer.Option(120.0, help="Seconds per trial before its worker is killed."),
) -> None:
    """Tune every problem of GRID and record trials and best configs (resumes an interrupted job)."""
    from aotune.tuner.driver import TuneSettings
    from aotune.tuner.jobs import JobOptions, run_job
    from aotune.tuner.progress import ProgressView, summary_table

    options = JobOptions(grid=grid, db=db, kernels=tuple(kernels or ()), interpreter=interpreter, workers=workers,
                         ray_address=ray_address, settings=TuneSettings(strategy=strategy, trial_timeout_s=timeout,
                                               strategy_options={"samples": samples} if strategy == "random" else {}))
    with ProgressView(console) as view:
        result = run_job(options, view.update)
    console.print(summary_table(result))


@app.command()
def space(
    kernel: str = typer.Argument(..., help="Kernel name."),
    target: str = typer.Option("sm_90", help="Target arch (sm_80 ... sm_120)."),
    problem: Optional[list[str]] = typer.Option(None, "--problem", "-p", help="Problem field k=v (repeat)."),
    include: Optional[list[str]] = typer.Option(None, help="Baseline sets to add."),
    restrict: Optional[list[str]] = typer.Option(None, help="Keep only these values: name=v1,v2 (repeat)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    jobs: Optional[int] = typer.Option(None, help="Parallel compile processes."),
) -> None:
    """Compile every candidate of KERNEL's space for TARGET and report resources and fit."""
    from aotune.kernels import get_kernel
    from aotune.tuner.feasibility import CompileResult, compile_space

    spec = get_kernel(kernel)
    typed = spec.problem(problem_pairs(problem or []) or _default_problem(kernel))
    candidates = [c for c in spec.space.candidates(typed, include=include or [])
                  if _matches(c.config, _restrictions(restrict or []))]
    valid = [c.config for c in candidates if c.invalid_reason is None]
    results = iter(compile_space(kernel, typed.to_dict(), valid, target, jobs=jobs))
    rows = []
    for cand in candidates:
        res = CompileResult("invalid", reason=cand.invalid_reason) if cand.invalid_reason else next(results)
        rows.append({"config": cand.config, **res.summary()})
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(title=f"{kernel} on {target}: {typed.key}")
    for col in ("config", "status", "shared_bytes", "registers", "spills", "reason"):
        table.add_column(col)
    for row in rows:
        table.add_row(json.dumps(row["config"]), row["status"], str(row["shared_bytes"]), str(row["registers"]),
                      str(row["spills"]), (row["reason"] or "")[:80])
    console.print(table)


def _restrictions(pairs: list[str]) -> dict[str, set[str]]:
    return {k: set(v.split(",")) for k, v in problem_pairs(pairs).items()}


def _matches(config: dict[str, Any], restrictions: dict[str, set[str]]) -> bool:
    return all(str(config.get(name)) in values for name, values in restrictions.items())


def _default_problem(kernel: str) -> dict[str, Any]:
    raise typer.BadParameter(f"give the problem of {kernel} with --problem k=v (one per field)")


@app.command()
def best(
    kernel: Optional[str] = typer.Option(None, help="Kernel name."),
    device: Optional[str] = typer.Option(None, help="Device class key, e.g. nvidia/sm_90/h100-80gb-hbm3."),
    db: Optional[str] = typer.Option(None, help="SQLAlchemy URL."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The best configs stored in the database."""
    from aotune.cache_db.store import Store

    store = Store(db)
    store.init()
    rows = store.best(kernel, device)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=1, default=str) + "\n")
        return
    table = Table(title="best configs")
    for col in ("kernel", "device", "problem", "config", "median us", "default us"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["kernel"], r["device_key"], r["problem_key"], json.dumps(r["config"]),
                      f"{r['median_us']:.2f}", "-" if r["default_median_us"] is None else f"{r['default_median_us']:.2f}")
    console.print(table)


@db_app.command("init")
def db_init(db: Optional[str] = typer.Option(None, help="SQLAlchemy URL.")) -> None:
    """Create the tables (idempotent)."""
    from aotune.cache_db.store import Store

    store = Store(db)
    store.init()
    console.print(f"database ready: {store.engine.url.render_as_string(hide_password=True)}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
