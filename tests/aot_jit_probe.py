"""Probe (run as a script, TRITON_INTERPRET=0): do a kernel's ``launches()`` specialize exactly like its
launcher's real Triton launches? Prints one JSON line per (problem, config): the two lists of keys.

The launcher runs on CPU tensors with ``JITFunction.run`` replaced by a recorder (nothing executes);
both sides go through the binder Triton's JIT uses, for an sm_90 target.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

from aotune.kernels import config_key, get_kernel

RECORDED: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []


def _record(self: JITFunction, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
    RECORDED.append((self, args, kwargs))


def specialization(fn: JITFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    backend = make_backend(GPUTarget("cuda", 90, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*args, **{k: v for k, v in kwargs.items()})
    return json.dumps([fn.fn.__name__, [list(map(str, s)) for s in spec], sorted(map(str, options.items()))])


def main() -> None:
    kernel = get_kernel(sys.argv[1])
    JITFunction.run = _record  # type: ignore[method-assign]
    for problem_data, config in json.loads(sys.argv[2]):
        problem = kernel.problem(problem_data)
        config = config or dict(kernel.space.default)
        RECORDED.clear()
        kernel.run(kernel.make_inputs(problem, 0, "cpu"), config)
        runtime = [specialization(fn, a, k) for fn, a, k in RECORDED]
        aot = [specialization(l.fn, l.args, l.kwargs) for l in kernel.launches(problem, config)]
        print(json.dumps({"problem": problem.key, "config": config_key(config), "runtime": runtime, "aot": aot}))


if __name__ == "__main__":
    assert triton.knobs.runtime.interpret is False, "run with TRITON_INTERPRET=0"
    main()
