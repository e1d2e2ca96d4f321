"""``@aot.autotune``: the ahead-of-time counterpart of ``@triton.autotune`` for a user's own Triton kernel.

``@triton.autotune`` benchmarks every config at the first call of each key in every process. With
``@autotune(space=..., key=[...])`` the config comes from the loader instead (bundles tuned ahead of
time, matched on the kernel's version, the problem key and the live device; nearest along the
``bucketed`` argument; a default checked to fit the device's shared memory otherwise), so the first
call pays nothing but the lookup (and no compilation when the bundle ships binaries)::

    @aot.autotune(space=ConfigSpace(params={"BLOCK": Pow2(64, 1024), "num_warps": Choice(4, 8)},
                                    default={"BLOCK": 256, "num_warps": 4}),
                  key=["n"], bucketed="n")
    @triton.jit
    def add(x, y, out, n, BLOCK: tl.constexpr): ...

    add[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, y, out, n)

The config's entries are passed as keyword arguments (constexprs and ``num_warps``/``num_stages``).
Tune the kernel by registering an ``aotune.kernels.Kernel`` of the same ``name`` whose
``source_modules`` is the kernel's module (and the same ``version_salt``): both compute the same
version hash, so the tuner's bundles apply here. The problem given to the space's constraints is a
namespace of the ``key`` arguments (tensors contribute their dtype as a string).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from aotune.cache_db import loader as _loader
from aotune.kernels.device import device_class
from aotune.kernels.runtime import fallback_configs
from aotune.kernels.space import Config, ConfigSpace


class AotKernel:
    """A Triton kernel whose launches take their config from the loader (see the module docstring)."""

    def __init__(self, fn: Any, *, space: ConfigSpace, key: Sequence[str], name: str | None = None,
                 bucketed: str | Sequence[str] = (), version_salt: str = "",
                 source: _loader.Loader | None = None) -> None:
        self.fn = fn
        self.space = space
        self.key = tuple(key)
        inner = getattr(fn, "fn", fn)
        self.name = name or f"{inner.__module__}.{inner.__name__}"
        self.bucketed = (bucketed,) if isinstance(bucketed, str) else tuple(bucketed)
        digest = hashlib.sha256(version_salt.encode())
        digest.update(inspect.getsource(importlib.import_module(inner.__module__)).encode())
        self.version = digest.hexdigest()[:16]
        self._source = source
        self._arg_names = list(fn.arg_names)
        missing = set(self.key) - set(self._arg_names)
        if missing:
            raise ValueError(f"{self.name}: key names {sorted(missing)} are not arguments of the kernel")
        self._memo: dict[tuple[Any, ...], _loader.Answer] = {}

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        return lambda *args, **kwargs: self.run(*args, grid=grid, **kwargs)

    def run(self, *args: Any, grid: Any, config: Config | None = None, **kwargs: Any) -> Any:
        """Launch with ``config``, or with the loader's answer for these arguments when it is None."""
        if config is None:
            config = dict(self.resolve_args(args, kwargs).config)
        launch_grid = grid({**kwargs, **config}) if callable(grid) else grid
        return self.fn[launch_grid](*args, **kwargs, **config)

    def resolve_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> _loader.Answer:
        """The loader's answer for the problem these launch arguments describe."""
        bound = dict(zip(self._arg_names, args))
        bound.update(kwargs)
        problem = {k: _scalar(bound[k]) for k in self.key}
        device = next((v.device for v in bound.values() if isinstance(v, torch.Tensor)), None)
        memo_key = (tuple(problem.items()), device)
        answer = self._memo.get(memo_key)
        if answer is None:
            answer = self._memo[memo_key] = self.resolve(problem, device, args, kwargs)
        return answer

    def resolve(self, problem: Mapping[str, Any], device: Any = None, args: Sequence[Any] = (),
                kwargs: Mapping[str, Any] | None = None) -> _loader.Answer:
        """The loader's answer for ``problem`` (a dict of the key arguments) on ``device``."""
        dclass = device_class(device)
        view = SimpleNamespace(**problem)
        fits = self._jit_fits(args, dict(kwargs or {}), dclass) if args and device is not None \
            and device.type == "cuda" else None
        source = self._source or _loader.default_loader()
        return source.lookup(self.name, self.version, dict(problem), dclass, bucketed=self.bucketed,
                             defaults=lambda: fallback_configs(self.space, view),
                             check=lambda c: self.space.check(dict(c), view), fits=fits)

    def _jit_fits(self, args: Sequence[Any], kwargs: dict[str, Any], dclass: Any) -> _loader.Fits:
        def fits(config: Mapping[str, Any]) -> bool | None:
            try:
                compiled = self.fn.warmup(*args, grid=(1,), **kwargs, **dict(config))
            except Exception:  # noqa: BLE001 - unknown: the loader answers "default:unchecked"
                return None
            return int(compiled.metadata.shared) <= dclass.smem_per_block
        return fits


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch.")
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"key argument of type {type(value).__name__} is not a scalar or a tensor")


def autotune(*, space: ConfigSpace, key: Sequence[str], name: str | None = None,
             bucketed: str | Sequence[str] = (), version_salt: str = "",
             source: _loader.Loader | None = None) -> Callable[[Any], AotKernel]:
    """Decorate a ``@triton.jit`` function so its launches take tuned configs ahead of time."""
    def wrap(fn: Any) -> AotKernel:
        return AotKernel(fn, space=space, key=key, name=name, bucketed=bucketed, version_salt=version_salt,
                         source=source)
    return wrap
