"""The kernel interface: what every tunable kernel declares, and the registry that finds it.

A `Kernel` bundles, for one Triton kernel: its name and source version hash, its typed problem key,
its config space, a seeded input factory, a launcher that takes a config, the PyTorch reference, the
tolerance, the launches to compile ahead of time for a problem, and the bytes/FLOP model.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from aotune.cache_db.identity import DeviceClass
from aotune.kernels.space import Config, ConfigSpace

Inputs = dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """Base of the typed problem keys. Subclasses are frozen dataclasses of ints, floats, strs, bools.

    ``key`` is the canonical string ("B=1,H=16,..." in field order); ``from_dict`` ignores nothing:
    an unknown or missing field is a ValueError naming it.
    """

    kernel_name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}; fields are {list(fields)}")
        values: dict[str, Any] = {}
        for name, spec in fields.items():
            if name in data:
                values[name] = _coerce(cls.__name__, name, spec, data[name])
            elif spec.default is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}: missing field {name!r}")
        return cls(**values)

    @property
    def key(self) -> str:
        return ",".join(f"{k}={_fmt(v)}" for k, v in self.to_dict().items())

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"{type(self).__name__}:{self.key}".encode()).hexdigest()[:16]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def _coerce(owner: str, name: str, spec: dataclasses.Field, value: Any) -> Any:
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
    try:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if "None" in kind:
                return None
            raise ValueError("None is not allowed")
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"not a bool: {value!r}")
                return value.lower() in ("true", "1")
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"not an integer: {value!r}")
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner}: field {name!r}: {exc}") from None


@dataclass(frozen=True)
class Cost:
    """The bytes a launch must move through device memory at least, and the FLOPs it must do."""

    bytes: int
    flops: int


@dataclass(frozen=True)
class Launch:
    """One Triton launch, as the JIT would see it: for ahead-of-time compilation of a candidate.

    ``args`` may hold ``torch.device('meta')`` tensors: only dtypes, shapes, strides and alignment matter.
    ``kwargs`` holds the constexprs and the launch options (num_warps, num_stages, ...). ``arch_kwargs``, if
    set, gives the constexprs that depend on the target GPU (its compute capability, e.g. 80 or 90): compiling
    for a target uses ``kwargs_for`` (a launcher on a real GPU puts that GPU's values in ``kwargs`` itself).
    """

    fn: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    arch_kwargs: Callable[[int], dict[str, Any]] | None = None

    def kwargs_for(self, capability: int) -> dict[str, Any]:
        """``kwargs`` as the launcher would pass them on a GPU of compute capability ``capability``."""
        return dict(self.kwargs, **(self.arch_kwargs(capability) if self.arch_kwargs else {}))


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; inf when out holds a NaN/inf that ref does not, or shapes differ.

    Infinite entries must match exactly (same sign, same place) and are left out of the norm.
    """
    if out.shape != ref.shape:
        return math.inf
    device = out.device if out.device.type != "meta" else torch.device("cpu")
    out64, ref64 = out.detach().to(device, torch.float64), ref.detach().to(device, torch.float64)
    if torch.isnan(out64).any():
        return math.inf
    inf_ref, inf_out = torch.isinf(ref64), torch.isinf(out64)
    if not torch.equal(inf_ref, inf_out) or not torch.equal(out64[inf_out], ref64[inf_ref]):
        return math.inf
    finite = ~inf_ref
    denom = torch.linalg.vector_norm(ref64[finite]).item()
    num = torch.linalg.vector_norm(out64[finite] - ref64[finite]).item()
    if denom == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / denom


def max_rel_error(out: Any, ref: Any) -> float:
    """rel_error over a tensor or a tuple/list of tensors (the worst one)."""
    if isinstance(out, (tuple, list)):
        if not isinstance(ref, (tuple, list)) or len(out) != len(ref):
            return math.inf
        return max((max_rel_error(o, r) for o, r in zip(out, ref)), default=0.0)
    return rel_error(out, ref)


@dataclass(frozen=True)
class Kernel:
    """Everything the tuner and the loader need to know about one tunable kernel."""

    name: str
    problem_type: type[Problem]
    space: ConfigSpace
    make_inputs: Callable[[Problem, int, str], Inputs]
    run: Callable[[Inputs, Config], Any]
    reference: Callable[[Inputs], Any]
    launches: Callable[[Problem, Config], list[Launch]]
    cost: Callable[[Problem], Cost]
    tolerance: float = 1e-2
    compare: Callable[[Any, Any], float] = max_rel_error
    source_modules: Sequence[str] = ()
    # "graph": small kernels timed as CUDA-graph replays (as they run in serving); "events": per launch.
    timing: str = "graph"
    version_salt: str = ""
    # What a serving process runs on a device class when no tuned config applies, if better than
    # ``space.default`` for some problems (a measured choice, not a guess); None where it is not valid:
    # then ``space.default``.
    runtime_default: Callable[[Problem, DeviceClass], Config | None] | None = None

    @functools.cached_property
    def version(self) -> str:
        """sha256 (16 hex) of the source of ``source_modules`` and the salt: a changed kernel is a new version."""
        digest = hashlib.sha256(self.version_salt.encode())
        for module_name in self.source_modules:
            digest.update(inspect.getsource(importlib.import_module(module_name)).encode())
        return digest.hexdigest()[:16]

    def problem(self, data: dict[str, Any]) -> Problem:
        """Typed problem from a dict (grid entry, CLI ``k=v`` pairs, DB row)."""
        return self.problem_type.from_dict(data)


_BUILTIN = {
    "selftest": "aotune.kernels.selftest",
    "mxfp4_moe": "aotune.kernels.mxfp4_moe",
    "flash_mla": "aotune.kernels.flash_mla",
    "mqa_logits": "aotune.kernels.mqa_logits",
}
_REGISTERED: dict[str, Kernel] = {}


def register(kernel: Kernel) -> Kernel:
    """Register a user kernel (built-ins are found lazily by name)."""
    if kernel.name in _BUILTIN:
        raise ValueError(f"kernel name {kernel.name!r} is taken by a built-in kernel")
    _REGISTERED[kernel.name] = kernel
    return kernel


def kernel_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_kernel(name: str) -> Kernel:
    """The registered kernel ``name``; ValueError naming the known kernels otherwise."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown kernel {name!r}; known kernels: {kernel_names()}")
    module = importlib.import_module(_BUILTIN[name])
    return module.KERNEL
