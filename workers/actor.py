"""The GPU actor: one per GPU (or one per CPU core for the interpreter), running handed-in callables."""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import ray


class _Worker:
    """Fingerprints its device on start; ``call`` runs one callable and tags its result."""

    def __init__(self, interpreter: bool, name: str) -> None:
        if interpreter:
            os.environ["TRITON_INTERPRET"] = "1"
        from aotune.workers import fingerprint

        self.name = name
        self.interpreter = interpreter
        self.props = fingerprint.interpreter_properties() if interpreter else fingerprint.device_properties(0)
        self.env = fingerprint.environment()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(), "props": self.props,
                "env": self.env, "interpreter": self.interpreter}

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> dict[str, Any]:
        start = time.perf_counter()
        value = fn(*args)
        return {"value": value, "host": socket.gethostname(), "worker": self.name,
                "busy_s": time.perf_counter() - start}


GpuWorker = ray.remote(max_restarts=0, max_task_retries=0)(_Worker)


@ray.remote(num_cpus=1, max_retries=0)
def cpu_call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run ``fn(*args)`` as a CPU task (compilation for a known target needs no GPU)."""
    return fn(*args)
