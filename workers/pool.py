"""The worker pool: actors by spec, a dynamic hand-out of callables, timeouts, restart on death.

The driver asks for idle workers, submits one callable per worker at a time (so a crash is attributed to
exactly one task), and polls for completions. A worker that dies (illegal memory access, abort, kill)
or runs past its task's deadline is reported as ``crash`` or ``timeout`` and replaced by a fresh actor
on the same resources.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError

from aotune.workers.actor import GpuWorker, cpu_call


@dataclass(frozen=True)
class WorkerSpec:
    """How to place one worker: a GPU (or the interpreter on a CPU) and optional custom resources."""

    name: str
    interpreter: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    label: str | None = None  # interpreter workers: the declared device class (replaces the product name)


@dataclass
class Completion:
    """What came back for one submitted task."""

    tag: Any
    worker: str
    ok: bool
    value: Any = None
    failure: str | None = None  # when ok is False: "crash", "timeout" or "error" (the callable raised)
    message: str | None = None
    host: str | None = None
    busy_s: float = 0.0


@dataclass
class _Slot:
    spec: WorkerSpec
    handle: Any
    info: dict[str, Any]
    restarts: int = 0
    tag: Any = None
    ref: Any = None
    deadline: float = 0.0


class WorkerPool:
    """One actor per spec; see the module docstring."""

    def __init__(self, specs: list[WorkerSpec], *, start_timeout_s: float = 300.0) -> None:
        if not specs:
            raise ValueError("specs: a pool needs at least one worker")
        self.start_timeout_s = start_timeout_s
        self.slots: dict[str, _Slot] = {}
        handles = {s.name: self._spawn(s) for s in specs}
        infos = ray.get([h.describe.remote() for h in handles.values()], timeout=start_timeout_s)
        for spec, info in zip(specs, infos):
            self.slots[spec.name] = _Slot(spec, handles[spec.name], _with_label(info, spec))

    @staticmethod
    def _spawn(spec: WorkerSpec) -> Any:
        options: dict[str, Any] = {"resources": dict(spec.resources) or None}
        if spec.interpreter:
            options.update(num_cpus=1, num_gpus=0, runtime_env={"env_vars": {"TRITON_INTERPRET": "1"}})
        else:
            options.update(num_cpus=1, num_gpus=1)
        return GpuWorker.options(**options).remote(spec.interpreter, spec.name)

    def info(self, name: str) -> dict[str, Any]:
        """What worker ``name`` reported at start: host, pid, device properties, environment."""
        return self.slots[name].info

    def idle(self) -> list[str]:
        return [name for name, slot in self.slots.items() if slot.ref is None]

    def busy(self) -> int:
        return sum(slot.ref is not None for slot in self.slots.values())

    def submit(self, name: str, tag: Any, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> None:
        """Run ``fn(*args)`` on worker ``name``; its completion carries ``tag``."""
        slot = self.slots[name]
        if slot.ref is not None:
            raise RuntimeError(f"worker {name} is busy")
        slot.tag, slot.deadline = tag, time.monotonic() + timeout_s
        slot.ref = slot.handle.call.remote(fn, args)

    def poll(self, timeout_s: float = 0.1) -> list[Completion]:
        """Completions that are ready now (waiting up to ``timeout_s``), timeouts included."""
        refs = {slot.ref: name for name, slot in self.slots.items() if slot.ref is not None}
        if not refs:
            return []
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        done = [self._collect(refs[ref]) for ref in ready]
        now = time.monotonic()
        for name, slot in self.slots.items():
            if slot.ref is not None and slot.ref not in ready and now > slot.deadline:
                done.append(self._fail(name, "timeout", "trial ran past its deadline; worker killed"))
        return done

    def _collect(self, name: str) -> Completion:
        slot = self.slots[name]
        try:
            result = ray.get(slot.ref)
        except RayTaskError as exc:  # the callable raised: the worker lives on
            completion = Completion(slot.tag, name, False, failure="error", message=str(exc)[-2000:],
                                    host=slot.info.get("host"))
            slot.tag, slot.ref = None, None
            return completion
        except (RayActorError, WorkerCrashedError) as exc:
            return self._fail(name, "crash", f"worker died: {type(exc).__name__}: {str(exc)[:500]}")
        completion = Completion(slot.tag, name, True, result["value"], host=result["host"], busy_s=result["busy_s"])
        slot.tag, slot.ref = None, None
        return completion

    def _fail(self, name: str, failure: str, message: str) -> Completion:
        slot = self.slots[name]
        completion = Completion(slot.tag, name, False, failure=failure, message=message,
                                host=slot.info.get("host"))
        self.restart(name)  # killed first even if it looks dead: a half-dead actor must free its GPU
        return completion

    def restart(self, name: str) -> None:
        """Replace worker ``name`` by a fresh actor on the same resources (e.g. after a poisoned context)."""
        slot = self.slots[name]
        ray.kill(slot.handle, no_restart=True)
        slot.restarts += 1
        slot.handle = self._spawn(slot.spec)
        try:
            slot.info = _with_label(ray.get(slot.handle.describe.remote(), timeout=self.start_timeout_s), slot.spec)
        except (GetTimeoutError, RayActorError) as exc:
            raise RuntimeError(f"worker {name} could not be restarted: {exc}") from exc
        slot.tag, slot.ref = None, None

    def shutdown(self) -> None:
        for slot in self.slots.values():
            ray.kill(slot.handle, no_restart=True)
        self.slots.clear()


def _with_label(info: dict[str, Any], spec: WorkerSpec) -> dict[str, Any]:
    if spec.label:
        info = dict(info, props=dict(info["props"], name=spec.label))
    return info


def submit_cpu(fn: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str] | None = None) -> Any:
    """Run ``fn(*args)`` as a Ray CPU task (with extra environment variables); returns its ObjectRef."""
    if env:
        return cpu_call.options(runtime_env={"env_vars": env}).remote(fn, args)
    return cpu_call.remote(fn, args)


CLASS_RESOURCE_PREFIX = "aotune_class_"


def declared_classes() -> dict[str, int]:
    """Device classes declared as Ray custom resources (``aotune_class_<label>: <workers>``) by the nodes."""
    resources = ray.cluster_resources()
    return {name.removeprefix(CLASS_RESOURCE_PREFIX): int(count) for name, count in sorted(resources.items())
            if name.startswith(CLASS_RESOURCE_PREFIX) and count >= 1}


def local_specs(*, interpreter: bool, count: int | None = None) -> list[WorkerSpec]:
    """The workers for the cluster Ray is connected to.

    Nodes that declare ``aotune_class_<label>`` resources get one worker per unit, pinned there (for
    interpreter workers the label also names the device class). Otherwise: one worker per GPU Ray sees,
    or ``count`` interpreter workers (1 by default). ``count`` caps the number of workers.
    """
    declared = declared_classes()
    if declared:
        specs = [WorkerSpec(f"{label}-{i}", interpreter=interpreter, resources={CLASS_RESOURCE_PREFIX + label: 1},
                            label=label if interpreter else None)
                 for label, units in declared.items() for i in range(units)]
        return specs[:count] if count else specs
    if interpreter:
        return [WorkerSpec(f"interp-{i}", interpreter=True) for i in range(count or 1)]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus == 0:
        raise RuntimeError("no GPU in the Ray cluster; use the interpreter (--interpreter) on a CPU machine")
    return [WorkerSpec(f"gpu-{i}") for i in range(min(count or gpus, gpus))]
