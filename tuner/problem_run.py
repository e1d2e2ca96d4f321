"""The state of one problem on one device class while the driver tunes it, and the CPU compile task."""
from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from typing import Any

from aotune.cache_db.identity import INTERPRETER, DeviceClass
from aotune.cache_db.store import Store
from aotune.kernels import config_key
from aotune.tuner.grid import PlannedProblem
from aotune.tuner.select import Measured
from aotune.tuner.strategies import Known, Request


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


def search_id(strategy_id: str, planned: PlannedProblem) -> str:
    """What a finished problem was finished with: the strategy, its settings, the restricted space and the
    included baseline sets. A problem finished with other settings is tuned again (its trials are reused)."""
    space = {name: list(param.values()) for name, param in planned.space.params.items()}
    text = json.dumps([space, list(planned.include)], sort_keys=True, default=str)
    return f"{strategy_id}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class ProblemRun:
    """One problem on one device class: candidates, what is known, what is compiling, queued and running."""

    def __init__(self, planned: PlannedProblem, device: DeviceClass, store: Store) -> None:
        self.planned, self.device = planned, device
        kernel, problem = planned.kernel, planned.problem
        self.ident = (kernel.name, kernel.version, device, problem.key, problem.to_dict())
        self.configs = {config_key(c.config): c for c in planned.candidates()}
        self.valid = [k for k, c in self.configs.items() if c.invalid_reason is None]
        default = config_key(kernel.space.default)
        baselines = [config_key(c) for name in planned.include for c in kernel.space.baseline(name)]
        self.required = list(dict.fromkeys([default, *baselines]))
        self.default_key = default
        self.results: dict[tuple[str, str], Known] = {}
        self.measured: dict[tuple[str, str], Measured] = {}
        self.compiled: dict[str, Any] = {}
        self.compiling: dict[str, list[Request]] = {}  # config key -> requests waiting for its compilation
        self.queue: deque[Request] = deque()
        self.in_flight = 0
        self.crashes: Counter = Counter()
        self.failed: set[str] = set()
        self.workers: set[str] = set()  # workers that hold (or are building) this problem's inputs
        self.prepared: set[str] = set()  # workers whose inputs and reference are built
        self.broken: str | None = None  # why the inputs or reference could not be built
        for row in store.trials(*self.ident):
            self.remember(row.config_key, row.stage, row.status, row.median_us, row.p20_us, row.p80_us,
                          row.shared_bytes, row.id)

    def remember(self, key: str, stage: str, status: str, median: float | None, p20: float | None,
                 p80: float | None, shared: int | None, trial_id: int | None) -> None:
        """Record a result; only configs of today's (restricted) space can become the winner."""
        self.results[(key, stage)] = Known(status, median)
        if status != "ok":
            self.failed.add(key)
        elif median is not None and key in self.configs:
            self.measured[(key, stage)] = Measured(key, self.configs[key].config, median, p20 or median,
                                                   p80 or median, shared or 0, trial_id)

    def idle(self) -> bool:
        return not (self.compiling or self.queue or self.in_flight)
