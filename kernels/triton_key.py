"""Opt-in: remember Triton's install hash (``triton_key``) across processes, so a first launch skips it.

Triton 3.6 computes ``triton.runtime.cache.triton_key()`` at the first JIT launch of every process: a
sha256 over its compiler and language sources and over ``libtriton.so`` (about 415 MB), about 0.4 s on
the H200 machine (BENCHMARKS.md). That is most of a first launch from shipped binaries. With
``AOTUNE_TRITON_KEY_CACHE=1`` in the environment (or ``enable()``), ``aotune.kernels`` stores the value
in ``~/.cache/aotune/triton-key/`` (``AOTUNE_TRITON_KEY_DIR``) under a fingerprint of Triton's version and
the path, size and modification time of every file in its package, and gives Triton the stored value
while the fingerprint matches: any changed file of the install means a new fingerprint and a fresh hash.
Off by default: it replaces ``triton.runtime.cache.triton_key`` (the function ``get_cache_key`` calls).
"""
from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import triton
import triton.runtime.cache as _triton_cache

ENV = "AOTUNE_TRITON_KEY_CACHE"
_ORIGINAL: Callable[[], str] = _triton_cache.triton_key


def fingerprint() -> str:
    """Triton's version and the (path, size, mtime) of every file of its package, hashed."""
    root = Path(triton.__file__).resolve().parent
    digest = hashlib.sha256(f"{triton.__version__}|{root}".encode())
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            digest.update(f"{folder}/{name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _store() -> Path:
    default = Path.home() / ".cache" / "aotune" / "triton-key"
    return Path(os.environ.get("AOTUNE_TRITON_KEY_DIR", default))


def _well_formed(value: str) -> bool:
    """What ``triton_key()`` returns: the version, then sha256 hex digests joined by '-'."""
    digests = value.removeprefix(triton.__version__).split("-")
    return value.startswith(triton.__version__) and all(
        len(d) == 64 and all(c in "0123456789abcdef" for c in d) for d in digests)


@functools.cache
def cached_triton_key() -> str:
    """``triton_key()``, read from the store when this install's fingerprint is there, else computed and stored."""
    path = _store() / f"{fingerprint()}.key"
    try:
        value = path.read_text()
        if _well_formed(value):
            return value
    except OSError:
        pass
    value = _ORIGINAL()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(value)
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the value still serves this process
    return value


def enable() -> None:
    """Make Triton's cache keys use ``cached_triton_key`` in this process."""
    _triton_cache.triton_key = cached_triton_key


def enable_from_env() -> None:
    """``enable()`` when ``AOTUNE_TRITON_KEY_CACHE`` is 1 (called by ``import aotune.kernels``)."""
    if os.environ.get(ENV, "0") in ("1", "true", "True"):
        enable()
