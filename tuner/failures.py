"""Failure is data: the trial statuses and the one classifier that maps exceptions to them.

Exceptions raised by a kernel under trial map to a status; exceptions of the tuner's own code are not
classified here and propagate (the tuner fails loudly).
"""
from __future__ import annotations

from typing import Literal, get_args

Status = Literal["ok", "invalid", "compile_error", "out_of_resources", "mismatch", "runtime_error", "crash",
                 "timeout"]
STATUSES: tuple[str, ...] = get_args(Status)


def _compile_error_types() -> tuple[type[BaseException], ...]:
    from triton.compiler.errors import CompilationError

    types: list[type[BaseException]] = [CompilationError]
    try:
        from triton.runtime.errors import InterpreterError

        types.append(InterpreterError)
    except ImportError:  # pragma: no cover - older Triton
        pass
    return tuple(types)


def _out_of_resources_types() -> tuple[type[BaseException], ...]:
    from triton.runtime.errors import OutOfResources

    return (OutOfResources,)


def _short(exc: BaseException, limit: int = 2000) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify_compile_error(exc: BaseException) -> tuple[Status, str]:
    """Status of an exception raised while compiling a candidate."""
    if isinstance(exc, _out_of_resources_types()):
        return "out_of_resources", _short(exc)
    if isinstance(exc, _compile_error_types()) or isinstance(exc, (AssertionError, RuntimeError, ValueError)):
        # ptxas failures surface as RuntimeError / subprocess errors; static_assert as CompilationError.
        return "compile_error", _short(exc)
    import subprocess

    if isinstance(exc, subprocess.CalledProcessError):
        return "compile_error", _short(exc)
    raise exc


def classify_run_error(exc: BaseException) -> tuple[Status, str]:
    """Status of an exception raised while running a candidate on a device (or the interpreter)."""
    if isinstance(exc, _out_of_resources_types()):
        return "out_of_resources", _short(exc)
    if isinstance(exc, _compile_error_types()):
        cause = exc.__cause__
        # The interpreter wraps everything in InterpreterError: a static_assert is a compile error,
        # anything else is a runtime error of the kernel.
        if cause is not None and not isinstance(cause, AssertionError) and type(exc).__name__ == "InterpreterError":
            return "runtime_error", _short(exc)
        return "compile_error", _short(exc)
    if isinstance(exc, (RuntimeError, ValueError, IndexError, TypeError, MemoryError)):
        text = str(exc).lower()
        if "out of memory" in text or "out of resource" in text:
            return "out_of_resources", _short(exc)
        return "runtime_error", _short(exc)
    raise exc
