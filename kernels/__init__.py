"""aotune.kernels: the tunable Triton kernels, their references, formats and the kernel interface.

Runtime path: importing this package imports torch and triton, and never ray, sqlalchemy or pydantic.
Kernel modules are imported lazily (``get_kernel(name)`` or ``import aotune.kernels.mxfp4_moe``).
"""
from __future__ import annotations

from aotune.kernels import _interpreter_fix, triton_key

_interpreter_fix.apply()
triton_key.enable_from_env()

from aotune.kernels.base import (  # noqa: E402
    Cost, Kernel, Launch, Problem, get_kernel, kernel_names, max_rel_error, register, rel_error,
)
from aotune.kernels.space import (  # noqa: E402
    Candidate, Choice, Config, ConfigSpace, Pow2, config_key,
)

__all__ = [
    "Candidate", "Choice", "Config", "ConfigSpace", "Cost", "Kernel", "Launch", "Pow2", "Problem",
    "config_key", "get_kernel", "kernel_names", "max_rel_error", "register", "rel_error",
]
