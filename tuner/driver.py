"""The job driver: plan -> compile ahead on CPU tasks -> trials on the worker pool -> records -> best.

Every device class of the pool gets the whole plan from its own dynamic queue: an idle worker takes the
next request of any active problem of its class. Problems are activated ahead of the workers so their
candidates compile on CPU tasks while the GPUs time. Every trial, failure included, is committed as it
finishes; a resumed job finds them and asks for nothing twice. The driver is the only DB writer.
A trial whose worker dies is retried once on a fresh worker (the death may not be its fault) and is
recorded as ``crash`` if it dies again; a crashed or timed-out config is never retried on that class.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from aotune.cache_db.identity import INTERPRETER, DeviceClass
from aotune.cache_db.schema import BestRow
from aotune.cache_db.store import Store, TrialRecord
from aotune.kernels import config_key
from aotune.tuner.grid import PlannedProblem
from aotune.tuner.select import Measured, pick_best
from aotune.tuner.strategies import Known, Request, get_strategy
from aotune.tuner.trial import TrialOutcome, TrialSpec, run_trial
from aotune.workers.pool import Completion, WorkerPool, submit_cpu

FAILED_FOR_GOOD = {"invalid", "compile_error", "out_of_resources", "mismatch", "runtime_error", "crash", "timeout"}


@dataclass(frozen=True)
class TuneSettings:
    strategy: str = "exhaustive"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    trial_timeout_s: float = 120.0
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


def device_class_of(info: dict[str, Any]) -> DeviceClass:
    """The device class a worker belongs to, from what it reported at start."""
    props = info["props"]
    if info.get("interpreter"):
        if props["name"] == INTERPRETER.product:
            return INTERPRETER
        return DeviceClass("cpu", INTERPRETER.arch, props["name"], INTERPRETER.smem_per_block, 1)
    return DeviceClass.from_properties(props["name"], props["major"], props["minor"], props["smem_optin"],
                                       props["sm_count"], vendor=props["vendor"])


def compile_target(device: DeviceClass) -> str:
    """The arch a device class's candidates are compiled for (the interpreter checks against sm_90)."""
    return "sm_90" if device.arch == INTERPRETER.arch else device.arch


def compile_for_trial(kernel: str, problem: dict[str, Any], config: dict[str, Any], target: str,
                      ship: bool) -> Any:
    """CPU task: AOT-compile one candidate; with ``ship`` the Triton cache entries travel with the result."""
    from aotune.tuner.feasibility import compile_cached, compile_candidate

    if ship:
        return compile_candidate(kernel, problem, config, target, keep_artifacts=True)
    return compile_cached(kernel, problem, config, target)


class _ProblemRun:
    """The state of one problem on one device class while it is being tuned."""

    def __init__(self, planned: PlannedProblem, device: DeviceClass, store: Store) -> None:
        self.planned, self.device = planned, device
        kernel, problem = planned.kernel, planned.problem
        self.ident = (kernel.name, kernel.version, device, problem.key, problem.to_dict())
        self.configs = {config_key(c.config): c for c in planned.candidates()}
        self.default_key = config_key(kernel.space.default)
        self.results: dict[tuple[str, str], Known] = {}
        self.measured: dict[tuple[str, str], Measured] = {}
        self.compiled: dict[str, Any] = {}
        self.compiling: dict[str, list[Request]] = {}  # config key -> requests waiting for its compilation
        self.queue: deque[Request] = deque()
        self.in_flight = 0
        self.crashes: Counter = Counter()
        self.failed: set[str] = set()
        self.workers: set[str] = set()  # workers that hold this problem's inputs
        for row in store.trials(*self.ident):
            self._remember(row.config_key, row.stage, row.status, row.median_us, row.p20_us, row.p80_us,
                           row.shared_bytes, row.id)

    def _remember(self, key: str, stage: str, status: str, median: float | None, p20: float | None,
                  p80: float | None, shared: int | None, trial_id: int | None) -> None:
        self.results[(key, stage)] = Known(status, median)
        if status in FAILED_FOR_GOOD:
            self.failed.add(key)
        if status == "ok" and median is not None:
            config = self.configs[key].config if key in self.configs else {}
            self.measured[(key, stage)] = Measured(key, config, median, p20 or median, p80 or median, shared or 0,
                                                   trial_id)

    def failed_for_good(self, key: str) -> bool:
        return key in self.failed

    def candidates(self) -> list[str]:
        """Configs a strategy may still ask for: valid, and not known to fail (compiled lazily on request)."""
        return [k for k, c in self.configs.items() if c.invalid_reason is None and k not in self.failed]


class Driver:
    """Runs a plan on a pool and records everything in a store (see the module docstring)."""

    def __init__(self, store: Store, pool: WorkerPool, settings: TuneSettings, job_id: int | None,
                 on_progress: Callable[[dict[str, ClassProgress]], None] | None = None) -> None:
        self.store, self.pool, self.settings, self.job_id = store, pool, settings, job_id
        self.strategy = get_strategy(settings.strategy, **settings.strategy_options)
        self.on_progress = on_progress or (lambda _p: None)
        self.worker_class = {name: device_class_of(pool.info(name)) for name in pool.slots}
        self.compile_refs: dict[Any, tuple[_ProblemRun, str]] = {}
        self.progress: dict[str, ClassProgress] = {}

    def run(self, plan: list[PlannedProblem]) -> dict[str, ClassProgress]:
        classes = sorted(set(self.worker_class.values()), key=lambda d: d.key)
        pending = {d: deque(plan) for d in classes}
        active: dict[DeviceClass, list[_ProblemRun]] = {d: [] for d in classes}
        progress = self.progress = {d.key: ClassProgress(d.key, len(plan)) for d in classes}
        for device in self.worker_class.values():
            progress[device.key].workers += 1
        last_report = 0.0
        while any(pending[d] or active[d] for d in classes):
            for device in classes:
                self._activate(device, pending[device], active[device], progress[device.key])
            self._collect_compiles()
            for device in classes:
                self._advance(active[device], progress[device.key], active[device])
            self._hand_out(active)
            for completion in self.pool.poll(timeout_s=0.02):
                self._record(completion, progress)
            if time.monotonic() - last_report > 0.25:
                self.on_progress(progress)
                last_report = time.monotonic()
        self.on_progress(progress)
        return progress

    # -- stages --------------------------------------------------------------------------------------
    def _activate(self, device: DeviceClass, pending: deque, active: list[_ProblemRun], progress: ClassProgress) -> None:
        limit = self.settings.compile_ahead * max(1, progress.workers)
        while pending and len(active) < limit:
            planned = pending.popleft()
            if self.store.problem_done(planned.kernel.name, planned.kernel.version, device, planned.problem.key,
                                       planned.problem.to_dict(), self.strategy.name):
                progress.problems_done += 1
                continue
            # Candidates a constraint removes are "invalid": known from the space alone, never run and not
            # stored as trials (a MoE problem has thousands; `aotune space` lists them with their reasons).
            run = _ProblemRun(planned, device, self.store)
            active.append(run)
            self._advance([run], progress, active)  # its first batch starts compiling now, ahead of the GPUs

    def _request(self, run: _ProblemRun, request: Request) -> None:
        """Queue a request, compiling its config first (on a CPU task) if that has not been done."""
        key = request.config_key
        if key in run.compiled:
            run.queue.append(request)
            return
        if key not in run.compiling:
            device = run.device
            ref = submit_cpu(compile_for_trial, (run.planned.kernel.name, run.planned.problem.to_dict(),
                                                 run.configs[key].config, compile_target(device),
                                                 device.vendor != "cpu"), env={"TRITON_INTERPRET": "0"})
            self.compile_refs[ref] = (run, key)
            run.compiling[key] = []
        run.compiling[key].append(request)

    def _collect_compiles(self) -> None:
        if not self.compile_refs:
            return
        ready, _ = ray.wait(list(self.compile_refs), num_returns=len(self.compile_refs), timeout=0)
        for ref in ready:
            run, key = self.compile_refs.pop(ref)
            result = ray.get(ref)  # an error of the tuner's own code fails the job loudly
            waiting = run.compiling.pop(key)
            run.compiled[key] = result
            if result.fits:
                run.queue.extend(waiting)
            elif (key, "final") not in run.results:
                self._commit(run, key, "final", TrialOutcome(result.status, message=result.reason), None,
                             self.progress[run.device.key])

    def _advance(self, runs: list[_ProblemRun], progress: ClassProgress, active: list[_ProblemRun]) -> None:
        """Ask the strategy for the next batch of every idle run; finish the runs it is done with."""
        for run in list(runs):
            if run.compiling or run.queue or run.in_flight:
                continue
            seed = self.settings.seed + int(run.planned.problem.hash, 16) % (2**31)
            batch = self.strategy.next_batch(run.candidates(), run.default_key, run.results, seed)
            if batch:
                allowed = set(run.candidates())
                for request in batch:
                    if request.config_key in allowed:
                        self._request(run, request)
                if run.compiling or run.queue:
                    continue
            self._finish(run)
            active.remove(run)
            progress.problems_done += 1

    def _hand_out(self, active: dict[DeviceClass, list[_ProblemRun]]) -> None:
        for name in self.pool.idle():
            runs = [r for r in active[self.worker_class[name]] if r.queue]
            if not runs:
                continue
            # Affinity: a worker stays on problems whose inputs it already built; otherwise it joins the
            # problem with the fewest workers (building inputs and the reference costs more than a trial).
            run = min(runs, key=lambda r: (name not in r.workers, len(r.workers)))
            run.workers.add(name)
            request = run.queue.popleft()
            compiled = run.compiled[request.config_key]
            spec = TrialSpec(run.planned.kernel.name, run.planned.problem.to_dict(),
                             run.configs[request.config_key].config, request.stage, request.timing,
                             self.settings.seed, list(compiled.artifacts))
            run.in_flight += 1
            self.pool.submit(name, (run, request), run_trial, (spec,), self.settings.trial_timeout_s)

    def _record(self, completion: Completion, progress: dict[str, ClassProgress]) -> None:
        run, request = completion.tag
        run.in_flight -= 1
        if completion.ok:
            outcome: TrialOutcome = completion.value
            if outcome.restart_worker:
                self.pool.restart(completion.worker)
        elif completion.failure == "crash" and run.crashes[(request.config_key, request.stage)] == 0:
            # The first death may not be this config's fault (a worker killed from outside, a node lost):
            # retry it once on a fresh worker; a second death records it as a crash.
            run.crashes[(request.config_key, request.stage)] += 1
            run.queue.appendleft(request)
            return
        else:
            outcome = TrialOutcome(completion.failure or "crash", message=completion.message)
        class_progress = progress[run.device.key]
        class_progress.busy_s += completion.busy_s
        self._commit(run, request.config_key, request.stage, outcome, completion, class_progress)

    def _commit(self, run: _ProblemRun, key: str, stage: str, outcome: TrialOutcome, completion: Completion | None,
                progress: ClassProgress | None) -> None:
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
        run._remember(key, stage, outcome.status, outcome.median_us, outcome.p20_us, outcome.p80_us,
                      record.shared_bytes, trial_id)
        if progress is not None:
            progress.trials += 1
            progress.statuses[outcome.status] += 1

    def _finish(self, run: _ProblemRun) -> None:
        finals = [m for (k, stage), m in run.measured.items() if stage == "final"]
        winner = pick_best(finals, run.default_key)
        best = None
        if winner is not None:
            default = run.measured.get((run.default_key, "final"))
            best = BestRow(trial_id=winner.trial_id, config=winner.config, median_us=winner.median_us,
                           p20_us=winner.p20_us, p80_us=winner.p80_us, shared_bytes=winner.shared_bytes,
                           default_median_us=default.median_us if default else None, source="measured")
        self.store.finish_problem(*run.ident, strategy=self.strategy.name, best=best, job_id=self.job_id)
