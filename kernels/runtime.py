"""What a launcher does when it is called with ``config=None``: ask the loader, fall back to a default that fits.

``resolve_config`` is memoized per (kernel, problem, device): after the first call for a shape it is
one dict lookup. The first call asks ``aotune.cache_db.loader`` (standard library only) with the live
device's DeviceClass; when the answer carries compiled kernels for this GPU's arch and this Triton
version, they are written into Triton's cache so the first launch loads them instead of compiling.

Each kernel declares the problem field(s) its tuned configs are bucketed along (``BUCKETED``); a
request between tuned values gets the nearest one (log2 distance), see the loader's docstring.
When no tuned config applies, the space's default is used if it fits the device's shared memory,
else the smallest configs of the space (by the product of their numeric parameters) are tried.
"""
from __future__ import annotations

import base64
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aotune.cache_db import loader as _loader
from aotune.cache_db.identity import INTERPRETER, DeviceClass
from aotune.kernels.base import Kernel, Problem
from aotune.kernels.device import device_class, nvidia_capability
from aotune.kernels.space import Config, ConfigSpace

# The problem field(s) along which a kernel's tuned configs are looked up by nearest value, in order.
BUCKETED: dict[str, tuple[str, ...]] = {
    "selftest": ("M",),          # tokens / rows
    "mxfp4_moe": ("M",),         # tokens
    "flash_mla": ("B",),         # batch (requests)
    "mqa_logits": ("B", "context"),  # batch; context is already a power of two in the launchers
}
FALLBACKS = 3  # smallest configs of the space tried when the default does not fit

_MEMO: dict[tuple[Any, ...], Config] = {}


def resolve_config(kernel: Kernel, problem: Problem, device: object) -> Config:
    """The config a launcher uses when the caller passed ``config=None`` (a fresh dict each call)."""
    key = (kernel.name, problem, device, _loader.generation())  # configure() starts afresh
    config = _MEMO.get(key)
    if config is None:
        answer = resolve(kernel, problem, device_class(device))  # type: ignore[arg-type]
        config = _MEMO[key] = dict(answer.config)
    return dict(config)


def resolve(kernel: Kernel, problem: Problem, device: DeviceClass, *,
            source: _loader.Loader | None = None, fits: _loader.Fits | None = None) -> _loader.Answer:
    """The loader's full answer (config and where it came from) for ``kernel`` on ``device``.

    ``source`` defaults to the process-wide loader; ``fits`` (does a config fit the device's shared
    memory?) defaults to compiling on the live GPU. Compiled kernels the answer carries are installed.
    """
    use = source or _loader.default_loader()
    if fits is None and device == INTERPRETER:
        fits = _no_limit  # the interpreter has no shared memory to run out of
    elif fits is None and _is_live(device):
        fits = _jit_fits(kernel, problem, device)
    answer = use.lookup(kernel.name, kernel.version, problem.to_dict(), device, bucketed=bucketed_fields(kernel),
                        defaults=lambda: default_configs(kernel, problem, device),
                        check=lambda c: kernel.space.check(dict(c), problem), fits=fits)
    if answer.binaries and _is_live(device):
        _install(answer, device)
    return answer


def bucketed_fields(kernel: Kernel) -> tuple[str, ...]:
    """The bucketed problem fields of ``kernel`` (``BUCKETED``, or the kernel's own ``bucketed`` attribute)."""
    own = getattr(kernel, "bucketed", None)
    if own:
        return (own,) if isinstance(own, str) else tuple(own)
    return BUCKETED.get(kernel.name, ())


def first_default(kernel: Kernel, problem: Problem, device: DeviceClass) -> Config:
    """The kernel's runtime default for ``problem`` on ``device`` when it has one and it is valid, else the
    space default."""
    first = kernel.runtime_default(problem, device) if kernel.runtime_default else None
    if first is None or kernel.space.check(first, problem):
        return dict(kernel.space.default)
    return dict(first)


def default_configs(kernel: Kernel, problem: Problem, device: DeviceClass) -> list[Config]:
    """``first_default``, the space default, then the ``FALLBACKS`` smallest configs of the space valid for
    ``problem``."""
    first = first_default(kernel, problem, device)
    return [first] + [c for c in fallback_configs(kernel.space, problem) if c != first]


def fallback_configs(space: ConfigSpace, problem: Any) -> list[Config]:
    """``space.default``, then the ``FALLBACKS`` smallest valid configs (by the product of numeric values)."""
    valid = sorted((c for c in space.configs() if space.check(c, problem) is None), key=_size)
    return [dict(space.default)] + [c for c in valid[:FALLBACKS] if c != space.default]


def _size(config: Mapping[str, Any]) -> int:
    total = 1
    for value in config.values():
        if isinstance(value, int) and not isinstance(value, bool):
            total *= max(value, 1)
    return total


def _is_live(device: DeviceClass) -> bool:
    if device == INTERPRETER or os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    import torch

    return torch.cuda.is_available() and device_class(None) == device


def _no_limit(config: Mapping[str, Any]) -> bool:
    return True


def _jit_fits(kernel: Kernel, problem: Problem, device: DeviceClass) -> _loader.Fits:
    """Compile a config's launches for the live GPU through Triton's JIT (``warmup``: no launch, and the
    compiled kernel stays in Triton's caches for the real launch) and compare its shared memory."""
    def fits(config: Mapping[str, Any]) -> bool | None:
        try:
            shared = 0
            for launch in kernel.launches(problem, dict(config)):
                # the constexprs the launcher takes on this GPU (``Launch.arch_kwargs``; not NVIDIA: none of sm_x's)
                kwargs = launch.kwargs_for(nvidia_capability(device) or 0)
                compiled = launch.fn.warmup(*launch.args, grid=(1,), **kwargs)
                shared = max(shared, int(compiled.metadata.shared))
        except Exception as exc:  # noqa: BLE001 - unknown is an answer: the loader says "unchecked"
            warnings.warn(f"aotune: could not compile {kernel.name} {dict(config)} to check its shared memory "
                          f"({type(exc).__name__}: {exc})", _loader.BundleWarning, stacklevel=2)
            return None
        return shared <= device.smem_per_block
    return fits


def _install(answer: _loader.Answer, device: DeviceClass) -> None:
    import triton
    from triton import knobs

    install_binaries(answer, device.arch, triton.__version__, knobs.cache.dir)


def install_binaries(answer: _loader.Answer, target: str, triton_version: str, cache_dir: str | os.PathLike) -> int:
    """Write the answer's compiled kernels for ``target`` and ``triton_version`` into Triton's cache folder.

    Returns how many kernels were installed (0 when the bundle has none for this target or Triton
    version: then the JIT compiles as usual). Files already there are left alone; a bad entry is
    reported once per process and skipped.
    """
    count = 0
    for binary in answer.binaries:
        if not isinstance(binary, dict) or binary.get("target") != target or binary.get("triton") != triton_version:
            continue
        for launch in binary.get("launches") or []:
            try:
                _install_launch(Path(cache_dir), launch)
                count += 1
            except (OSError, ValueError, KeyError, TypeError) as exc:
                _warn_once(f"aotune loader: could not install a compiled kernel ({exc}); it will be compiled")
    return count


def _install_launch(root: Path, launch: Mapping[str, Any]) -> None:
    files = {name: base64.b64decode(text, validate=True) for name, text in launch["files"].items()}
    install_cache_entry(root, launch["dir"], files)


def install_cache_entry(root: Path, folder_name: str, files: Mapping[str, bytes]) -> None:
    """Write one Triton cache entry (file name -> bytes) into ``root/folder_name``, as Triton would.

    The group file names absolute paths of the machine that compiled it: they are pointed at this
    folder, so Triton's JIT finds the entry (a cache hit) instead of compiling. Existing files are kept.
    """
    for name in [folder_name, *files]:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"unsafe file name {name!r}")
    folder = root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    groups = {name: data for name, data in files.items() if name.startswith("__grp__")}
    for name, data in files.items():
        if name not in groups:
            _write_new(folder / name, data)
    for name, data in groups.items():
        children = json.loads(data)["child_paths"]
        paths = {child: str(folder / child) for child in children if (folder / child).is_file()}
        _write_new(folder / name, json.dumps({"child_paths": paths}).encode())


def _write_new(path: Path, data: bytes) -> None:
    if path.exists():
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


_PROCESS_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Report ``message`` once per process as a BundleWarning."""
    if message not in _PROCESS_WARNED:
        _PROCESS_WARNED.add(message)
        warnings.warn(message, _loader.BundleWarning, stacklevel=3)
