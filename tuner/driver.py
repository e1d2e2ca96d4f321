"""The job driver: plan -> compile ahead on CPU tasks -> trials on the worker pool -> records -> best.

Every device class of the pool gets the whole plan from its own dynamic queue: an idle worker takes the
next request of any active problem of its class. Problems are activated ahead of the workers, and the
configs their strategy asks for compile on CPU tasks while the GPUs time. A worker builds a problem's
inputs and reference in a separate call before its first trial of that problem, so the trial's timeout
covers the trial alone. Every trial, failure included, is committed as it finishes; a resumed job finds
them and asks for nothing twice. The driver is the only DB writer.

Failures: a trial whose worker dies is retried once on a fresh worker (the death may not be its fault)
and recorded as ``crash`` if it dies again; a trial past its timeout is ``timeout``; an exception that
escapes a trial or a compile task is recorded against that config (``runtime_error`` /
``compile_error``) with its text. A failed config is never tried again on that device class.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayError

from aotune.cache_db.identity import DeviceClass
from aotune.cache_db.schema import BestRow
from aotune.cache_db.store import Store, TrialRecord
from aotune.tuner.feasibility import CompileResult
from aotune.tuner.grid import PlannedProblem
from aotune.tuner.problem_run import ProblemRun, compile_for_trial, compile_target, device_class_of, search_id
from aotune.tuner.select import pick_best
from aotune.tuner.strategies import Request, get_strategy, strategy_id
from aotune.tuner.trial import TrialOutcome, TrialSpec, prepare_workload, run_trial
from aotune.workers.pool import Completion, WorkerPool, submit_cpu

__all__ = ["ClassProgress", "Driver", "TuneSettings", "device_class_of"]

_SETUP = ("", "setup")  # ProblemRun.crashes key of a problem's input and reference building


@dataclass(frozen=True)
class TuneSettings:
    strategy: str = "exhaustive"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    trial_timeout_s: float = 120.0
    prepare_timeout_s: float = 900.0  # building a problem's inputs and reference on a worker
    compile_ahead: int = 3  # problems per worker activated (compiling) ahead of the timing
    seed: int = 0


@dataclass
class ClassProgress:
    device: str
    problems_total: int
    problems_done: int = 0
    trials: int = 0
    statuses: Counter = field(default_factory=Counter)
    busy_s: float = 0.0
    workers: int = 0
    started: float = field(default_factory=time.monotonic)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Task:
    run: ProblemRun
    request: Request | None  # None: building the problem's inputs and reference on the worker


class Driver:
    """Runs a plan on a pool and records everything in a store (see the module docstring)."""

    def __init__(self, store: Store, pool: WorkerPool, settings: TuneSettings, job_id: int | None,
                 on_progress: Callable[[dict[str, ClassProgress]], None] | None = None) -> None:
        self.store, self.pool, self.settings, self.job_id = store, pool, settings, job_id
        self.strategy = get_strategy(settings.strategy, **settings.strategy_options)
        self.strategy_id = strategy_id(self.strategy)
        self.on_progress = on_progress or (lambda _p: None)
        self.worker_class = {name: device_class_of(pool.info(name)) for name in pool.slots}
        self.compile_refs: dict[Any, tuple[ProblemRun, str]] = {}
        self.progress: dict[str, ClassProgress] = {}

    def run(self, plan: list[PlannedProblem]) -> dict[str, ClassProgress]:
        classes = sorted(set(self.worker_class.values()), key=lambda d: d.key)
        pending = {d: deque(plan) for d in classes}
        active: dict[DeviceClass, list[ProblemRun]] = {d: [] for d in classes}
        self.progress = {d.key: ClassProgress(d.key, len(plan)) for d in classes}
        for device in self.worker_class.values():
            self.progress[device.key].workers += 1
        last_report = 0.0
        while any(pending[d] or active[d] for d in classes):
            for device in classes:
                self._activate(device, pending[device], active[device])
            self._collect_compiles(wait_s=0.0 if self.pool.busy() else 0.05)
            for device in classes:
                self._advance(active[device], active[device])
            self._hand_out(active)
            for completion in self.pool.poll(timeout_s=0.02 if self.pool.busy() else 0.0):
                self._record(completion, active)
            if time.monotonic() - last_report > 0.25:
                self.on_progress(self.progress)
                last_report = time.monotonic()
        self.on_progress(self.progress)
        return self.progress

    # -- problems ----------------------------------------------------------------------------------
    def _activate(self, device: DeviceClass, pending: deque, active: list[ProblemRun]) -> None:
        progress = self.progress[device.key]
        while pending and len(active) < self.settings.compile_ahead * max(1, progress.workers):
            planned = pending.popleft()
            done_id = search_id(self.strategy_id, planned)
            if self.store.problem_done(planned.kernel.name, planned.kernel.version, device, planned.problem.key,
                                       planned.problem.to_dict(), done_id):
                progress.problems_done += 1
                continue
            # Candidates a constraint removes are "invalid": known from the space alone, never run and not
            # stored as trials (a MoE problem has thousands; `aotune space` lists them with their reasons).
            run = ProblemRun(planned, device, self.store)
            active.append(run)
            self._advance([run], active)  # its first batch starts compiling now, ahead of the GPUs

    def _advance(self, runs: list[ProblemRun], active: list[ProblemRun]) -> None:
        """Ask the strategy for the next batch of every idle run; finish the runs it is done with."""
        for run in list(runs):
            if not run.idle():
                continue
            if run.broken:  # left unfinished: a later job tries it again
                active.remove(run)
                self.progress[run.device.key].problems_done += 1
                continue
            seed = self.settings.seed + int(run.planned.problem.hash, 16) % (2**31)
            for request in self.strategy.next_batch(run.valid, run.required, run.results, seed) or []:
                if request.config_key in run.configs and request.config_key not in run.failed:
                    self._request(run, request)
            if run.idle():
                self._finish(run)
                active.remove(run)
                self.progress[run.device.key].problems_done += 1

    def _request(self, run: ProblemRun, request: Request) -> None:
        """Queue a request, compiling its config first (on a CPU task) if that has not been done."""
        key = request.config_key
        if key in run.compiled:
            run.queue.append(request)
            return
        if key not in run.compiling:
            ref = submit_cpu(compile_for_trial, (run.planned.kernel.name, run.planned.problem.to_dict(),
                                                 run.configs[key].config, compile_target(run.device),
                                                 run.device.vendor != "cpu"), env={"TRITON_INTERPRET": "0"})
            self.compile_refs[ref] = (run, key)
            run.compiling[key] = []
        run.compiling[key].append(request)

    def _collect_compiles(self, wait_s: float) -> None:
        if not self.compile_refs:
            return
        ready, _ = ray.wait(list(self.compile_refs), num_returns=len(self.compile_refs), timeout=wait_s)
        for ref in ready:
            run, key = self.compile_refs.pop(ref)
            try:
                result = ray.get(ref)
            except RayError as exc:  # the compiler crashed, or raised what the classifier does not know
                result = CompileResult("compile_error", reason=f"compile task failed: {str(exc)[-1500:]}")
            waiting = run.compiling.pop(key)
            run.compiled[key] = result
            if run.broken:
                continue
            if result.fits:
                run.queue.extend(waiting)
            elif (key, "final") not in run.results:
                self._commit(run, key, "final", TrialOutcome(result.status, message=result.reason), None)

    # -- workers -----------------------------------------------------------------------------------
    def _hand_out(self, active: dict[DeviceClass, list[ProblemRun]]) -> None:
        for name in self.pool.idle():
            runs = [r for r in active[self.worker_class[name]] if r.queue]
            if not runs:
                continue
            # Affinity: a worker stays on problems whose inputs it already built; otherwise it joins the
            # problem with the fewest workers (building inputs and the reference costs more than a trial).
            run = min(runs, key=lambda r: (name not in r.workers, len(r.workers)))
            run.workers.add(name)
            run.in_flight += 1
            if name not in run.prepared:
                spec = dataclasses.replace(self._spec(run, run.queue[0]), artifacts=[])
                self.pool.submit(name, _Task(run, None), prepare_workload, (spec,), self.settings.prepare_timeout_s)
                continue
            request = run.queue.popleft()
            self.pool.submit(name, _Task(run, request), run_trial, (self._spec(run, request),),
                             self.settings.trial_timeout_s)

    def _spec(self, run: ProblemRun, request: Request) -> TrialSpec:
        compiled = run.compiled[request.config_key]
        return TrialSpec(run.planned.kernel.name, run.planned.problem.to_dict(), run.configs[request.config_key].config,
                         request.stage, request.timing, self.settings.seed, list(compiled.artifacts))

    def _forget_worker(self, name: str, active: dict[DeviceClass, list[ProblemRun]]) -> None:
        """A restarted worker holds no inputs any more."""
        for run in active[self.worker_class[name]]:
            run.prepared.discard(name)
            run.workers.discard(name)

    def _record(self, completion: Completion, active: dict[DeviceClass, list[ProblemRun]]) -> None:
        task: _Task = completion.tag
        run = task.run
        run.in_flight -= 1
        progress = self.progress[run.device.key]
        progress.busy_s += completion.busy_s
        if not completion.ok and completion.failure in ("crash", "timeout"):
            self._forget_worker(completion.worker, active)
        if task.request is None:
            self._record_prepare(completion, run, progress)
            return
        request = task.request
        if completion.ok:
            outcome: TrialOutcome = completion.value
            if outcome.restart_worker:
                self.pool.restart(completion.worker)
                self._forget_worker(completion.worker, active)
        elif completion.failure == "crash" and run.crashes[(request.config_key, request.stage)] == 0:
            # The first death may not be this config's fault (a worker killed from outside, a node lost):
            # retry it once on a fresh worker; a second death records it as a crash.
            run.crashes[(request.config_key, request.stage)] += 1
            run.queue.appendleft(request)
            return
        else:
            status = "runtime_error" if completion.failure == "error" else completion.failure or "crash"
            outcome = TrialOutcome(status, message=completion.message)
        self._commit(run, request.config_key, request.stage, outcome, completion)

    def _record_prepare(self, completion: Completion, run: ProblemRun, progress: ClassProgress) -> None:
        if completion.ok:
            run.prepared.add(completion.worker)
            return
        if completion.failure == "crash" and run.crashes[_SETUP] == 0:
            # As for trials: the first death may be a worker killed from outside; build again on a fresh one.
            run.crashes[_SETUP] += 1
            return
        # Inputs or reference could not be built: the problem is left unfinished (a later job retries it).
        run.broken = f"{completion.failure}: {(completion.message or '')[-300:]}"
        run.queue.clear()
        progress.statuses["setup_failed"] += 1
        progress.errors.append(f"{run.planned.kernel.name} {run.planned.problem.key}: {run.broken}")

    # -- records -----------------------------------------------------------------------------------
    def _commit(self, run: ProblemRun, key: str, stage: str, outcome: TrialOutcome,
                completion: Completion | None) -> None:
        compiled = run.compiled.get(key)
        env = self.pool.info(completion.worker)["env"] if completion else {}
        record = TrialRecord(
            kernel=run.ident[0], kernel_version=run.ident[1], device=run.device, problem_key=run.ident[3],
            problem=run.ident[4], config_key=key, config=run.configs[key].config, status=outcome.status, stage=stage,
            median_us=outcome.median_us, p20_us=outcome.p20_us, p80_us=outcome.p80_us, times_us=outcome.times_us,
            timing_method=outcome.timing_method, error=outcome.error, message=outcome.message,
            shared_bytes=getattr(compiled, "shared_bytes", None), registers=getattr(compiled, "registers", None),
            spills=getattr(compiled, "spills", None), compile_seconds=getattr(compiled, "seconds", None),
            host=completion.host if completion else None, worker=completion.worker if completion else None,
            versions={k: env.get(k) for k in ("triton", "torch", "cuda")}, job_id=self.job_id,
        )
        trial_id = self.store.commit_trial(record)
        run.remember(key, stage, outcome.status, outcome.median_us, outcome.p20_us, outcome.p80_us,
                     record.shared_bytes, trial_id)
        progress = self.progress[run.device.key]
        progress.trials += 1
        progress.statuses[outcome.status] += 1

    def _finish(self, run: ProblemRun) -> None:
        finals = [m for (_key, stage), m in run.measured.items() if stage == "final"]
        winner = pick_best(finals, run.default_key)
        best = None
        if winner is not None:
            default = run.measured.get((run.default_key, "final"))
            best = BestRow(trial_id=winner.trial_id, config=winner.config, median_us=winner.median_us,
                           p20_us=winner.p20_us, p80_us=winner.p80_us, shared_bytes=winner.shared_bytes,
                           default_median_us=default.median_us if default else None, source="measured")
        self.store.finish_problem(*run.ident, strategy=search_id(self.strategy_id, run.planned), best=best,
                                  job_id=self.job_id)
