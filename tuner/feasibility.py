"""Feasibility: compile every candidate ahead of time for a target arch, record its resources, drop
what cannot run there before any GPU time is spent.

Compilation mirrors the Triton JIT exactly (same binder, same specialization of the arguments, same
options), so a candidate compiled here lands in Triton's cache under the key the JIT will look up on
the GPU: the trial then launches without compiling. Results are cached on disk per (kernel version,
problem, config, target, Triton version).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import triton

from aotune.kernels import Launch, config_key, get_kernel
from aotune.tuner.arch import Arch, get_arch
from aotune.tuner.host_stubs import host_stub_entries


@dataclass(frozen=True)
class CompileResult:
    """Resources of one candidate on one target. ``status``: ok, invalid, compile_error, out_of_resources."""

    status: str
    shared_bytes: int = 0
    registers: int = 0
    spills: int = 0
    reason: str | None = None
    seconds: float = 0.0
    # Triton cache entries (file name -> bytes) per launch, so another machine can install them; with
    # ``host_modules`` (bundles) and a CUDA driver here, also the host modules Triton builds before a first
    # launch (host_stubs.py). Trials do not ship those: a worker builds each once and keeps it.
    artifacts: list[dict[str, bytes]] = field(default_factory=list, repr=False)

    @property
    def fits(self) -> bool:
        return self.status == "ok"

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("artifacts")
        data["fits"] = self.fits
        return data


def compile_launch(launch: Launch, arch: Arch) -> Any:
    """Compile one launch for ``arch`` exactly as the JIT would (returns Triton's CompiledKernel)."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    target = GPUTarget("cuda", arch.capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = launch.kwargs_for(arch.capability)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    if fn.is_gluon():  # a Gluon kernel (explicit layouts) has its own front end
        from triton.experimental.gluon._runtime import GluonASTSource as source
    else:
        source = ASTSource
    return triton.compile(source(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


_RESOURCE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def cuobjdump(cubin: bytes, *flags: str) -> str:
    """What Triton's bundled ``cuobjdump`` prints for ``cubin`` with ``flags`` (e.g. ``-sass``)."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        return subprocess.run([str(tool), *flags, handle.name], capture_output=True, text=True, check=True).stdout


def cubin_resources(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, local/stack bytes per thread) from ``cuobjdump --dump-resource-usage``."""
    text = cuobjdump(cubin, "--dump-resource-usage")
    match = _RESOURCE.search(text)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no resource line:\n{text}")
    regs, stack, _shared, local = (int(g) for g in match.groups())
    return regs, max(stack, local)


def _cache_artifacts(compiled: Any) -> dict[str, bytes]:
    """The Triton cache entry of a compiled kernel: file name -> bytes (``__dir__`` names the folder)."""
    from triton.runtime.cache import get_cache_manager

    folder = Path(get_cache_manager(compiled.metadata.hash).cache_dir)
    if not folder.is_dir():
        return {}
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.endswith(".tmp")}
    files["__dir__"] = folder.name.encode()
    return files


def _check_limits(result: CompileResult, arch: Arch, num_warps: int) -> CompileResult:
    if result.shared_bytes > arch.smem_per_block:
        reason = f"shared memory {result.shared_bytes} B > {arch.smem_per_block} B on {arch.name}"
    elif result.registers * num_warps * 32 > arch.regs_per_sm:
        reason = f"{result.registers} registers x {num_warps * 32} threads > {arch.regs_per_sm} on {arch.name}"
    else:
        return result
    return CompileResult("out_of_resources", result.shared_bytes, result.registers, result.spills, reason,
                         result.seconds, result.artifacts)


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1) in this process."""
    return os.environ.get("TRITON_INTERPRET", "0") in ("1", "true", "True")


@contextlib.contextmanager
def _compiler_env() -> Iterator[None]:
    """Child processes started inside this block see TRITON_INTERPRET=0 (real compilation)."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def _pool(jobs: int) -> ProcessPoolExecutor:
    import multiprocessing

    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def compile_candidate(kernel_name: str, problem: dict[str, Any], config: dict[str, Any], target: str,
                      *, keep_artifacts: bool = False, host_modules: bool = False) -> CompileResult:
    """Compile every launch of one candidate for ``target``; never raises for a bad config.

    Under the interpreter (TRITON_INTERPRET=1) kernels are not JIT functions, so the compilation runs in
    a child process that compiles for real.
    """
    if interpreting():
        with _compiler_env(), _pool(1) as pool:
            return pool.submit(_compile_here, kernel_name, problem, config, target, keep_artifacts,
                               host_modules).result()
    return _compile_here(kernel_name, problem, config, target, keep_artifacts, host_modules)


def _compile_here(kernel_name: str, problem: dict[str, Any], config: dict[str, Any], target: str,
                  keep_artifacts: bool, host_modules: bool = False) -> CompileResult:
    import time

    from aotune.tuner.failures import classify_compile_error

    kernel = get_kernel(kernel_name)
    arch = get_arch(target)
    typed = kernel.problem(problem)
    reason = kernel.space.check(config, typed)
    if reason:
        return CompileResult("invalid", reason=reason)
    start = time.perf_counter()
    shared = regs = spills = 0
    artifacts: list[dict[str, bytes]] = []
    try:
        for launch in kernel.launches(typed, config):
            compiled = compile_launch(launch, arch)
            launch_regs, launch_spills = cubin_resources(compiled.asm["cubin"])
            shared, regs, spills = max(shared, compiled.metadata.shared), max(regs, launch_regs), spills + launch_spills
            if keep_artifacts:
                artifacts.append(_cache_artifacts(compiled))
            if keep_artifacts and host_modules:
                artifacts.extend(e for e in host_stub_entries(compiled)
                                 if e["__dir__"] not in {a.get("__dir__") for a in artifacts})
    except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raise there
        status, text = classify_compile_error(exc)
        return CompileResult(status, reason=text, seconds=time.perf_counter() - start)
    result = CompileResult("ok", shared, regs, spills, None, time.perf_counter() - start, artifacts)
    return _check_limits(result, arch, int(config.get("num_warps", 4)))


def _cache_path(kernel_name: str, problem: dict[str, Any], config: dict[str, Any], target: str) -> Path:
    kernel = get_kernel(kernel_name)
    ident = json.dumps([kernel_name, kernel.version, kernel.problem(problem).key, config_key(config),
                        get_arch(target).name, triton.__version__])
    root = Path(os.environ.get("AOTUNE_COMPILE_CACHE", Path.home() / ".cache" / "aotune" / "compile"))
    return root / f"{hashlib.sha256(ident.encode()).hexdigest()}.json"


def compile_cached(kernel_name: str, problem: dict[str, Any], config: dict[str, Any], target: str) -> CompileResult:
    """``compile_candidate`` behind an on-disk cache of its summary (artifacts are not cached here)."""
    path = _cache_path(kernel_name, problem, config, target)
    if path.is_file():
        try:
            return CompileResult(**{k: v for k, v in json.loads(path.read_text()).items() if k != "fits"})
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
    result = compile_candidate(kernel_name, problem, config, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.summary()))
    tmp.replace(path)
    return result


def compile_space(kernel_name: str, problem: dict[str, Any], configs: list[dict[str, Any]], target: str,
                  *, jobs: int | None = None) -> list[CompileResult]:
    """Compile many candidates in parallel processes (cached), in the order given."""
    jobs = jobs or max(1, min(len(configs), os.cpu_count() or 1))
    if not interpreting() and (jobs == 1 or len(configs) <= 1):
        return [compile_cached(kernel_name, problem, c, target) for c in configs]
    n = len(configs)
    with _compiler_env(), _pool(jobs) as pool:
        return list(pool.map(compile_cached, [kernel_name] * n, [problem] * n, configs, [target] * n))
