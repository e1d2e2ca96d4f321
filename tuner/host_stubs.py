"""Triton's host-side launch modules as cache entries, so that shipped binaries skip the C compiler too.

A fresh process that finds a kernel's cubin in Triton's cache still builds two small C extensions with
the host compiler before the first launch: ``cuda_utils`` (once per Triton install) and a
``__triton_launcher`` per kernel signature. Triton caches both under ``sha256(source + platform)`` with
the Python extension suffix in the file name, so an entry built on one machine is found (and only found)
by processes of the same platform, Python ABI and Triton version. Building them needs the CUDA driver
library (``libcuda.so.1``), so this returns nothing on a machine without one.
"""
from __future__ import annotations

import hashlib
import subprocess
import sysconfig
import warnings
from pathlib import Path
from typing import Any


def _module_entry(src: str, name: str) -> dict[str, bytes]:
    """Build (or find) Triton's cached C module ``name`` of ``src``; return its cache entry."""
    from triton.backends.nvidia import driver as nv
    from triton.runtime.build import compile_module_from_src, platform_key
    from triton.runtime.cache import get_cache_manager

    compile_module_from_src(src=src, name=name, library_dirs=nv.library_dirs(), include_dirs=nv.include_dirs,
                            libraries=nv.libraries)
    folder = Path(get_cache_manager(hashlib.sha256((src + platform_key()).encode()).hexdigest()).cache_dir)
    file_name = f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    return {"__dir__": folder.name.encode(), file_name: (folder / file_name).read_bytes()}


def _launcher_source(compiled: Any) -> str:
    """The C source of the launcher Triton's CUDA driver builds for ``compiled`` (as ``CudaLauncher`` does)."""
    from triton.backends.nvidia import driver as nv

    src = compiled.src

    def arg_index(x: Any) -> Any:
        return (src.fn.arg_names.index(x),) if isinstance(x, str) else x

    constants = {arg_index(idx): value for idx, value in getattr(src, "constants", {}).items()}
    return nv.make_launcher(constants, dict(src.signature), getattr(compiled.metadata, "tensordesc_meta", None))


def cuda_driver_present() -> bool:
    """True when Triton can link its host modules here (``libcuda.so.1`` is installed)."""
    from triton.backends.nvidia import driver as nv

    try:
        nv.library_dirs()
    except (AssertionError, OSError, subprocess.CalledProcessError):
        return False
    return True


def host_stub_entries(compiled: Any) -> list[dict[str, bytes]]:
    """The ``cuda_utils`` and launcher cache entries for a compiled CUDA kernel; [] without a CUDA driver.

    A failed build (no C compiler, say) is a warning, not an error: the kernel itself compiled, and a
    process that finds no host module builds it as Triton always does."""
    if not cuda_driver_present():
        return []
    from triton.backends.nvidia import driver as nv

    try:
        utils = Path(nv.dirname, "driver.c").read_text()
        return [_module_entry(utils, "cuda_utils"), _module_entry(_launcher_source(compiled), "__triton_launcher")]
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as exc:
        warnings.warn(f"aotune: Triton's host launch modules were not built ({type(exc).__name__}: {exc}); "
                      "the binaries carry the kernels only", RuntimeWarning, stacklevel=2)
        return []
