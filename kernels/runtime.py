"""What a launcher does when it is called with ``config=None``: ask the loader, fall back to the default.

Standard-library-only lookups (``aotune.cache_db.loader``) live behind this one function so that every
kernel resolves configs the same way.
"""
from __future__ import annotations

from aotune.kernels.base import Kernel, Problem
from aotune.kernels.space import Config


def resolve_config(kernel: Kernel, problem: Problem, device: object) -> Config:
    """The config a launcher uses when the caller passed ``config=None``.

    Until the runtime loader is wired in, this is the kernel's default config.
    """
    return dict(kernel.space.default)
