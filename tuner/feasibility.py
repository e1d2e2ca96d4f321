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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from collections.abc import Iterator, Sequence
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


def _bind(launch: Launch, arch: Arch) -> tuple[Any, Any, Any]:
    """Triton's own binding of ``launch`` for ``arch`` (same binder, specialization and options as the
    JIT): the compiler's source, target and options."""
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
    return source(fn, signature, constexprs, attrs), target, options


def compile_launch(launch: Launch, arch: Arch) -> Any:
    """Compile one launch for ``arch`` exactly as the JIT would (returns Triton's CompiledKernel)."""
    source, target, options = _bind(launch, arch)
    return triton.compile(source, target=target, options=options.__dict__)


def launch_identity(launch: Launch, arch: Arch) -> str:
    """A digest of what compiling ``launch`` for ``arch`` depends on (the kernel's source and its
    dependencies, the arguments' specialization, the constexprs, the options; Triton's cache key less the
    compiler's own version): launches with equal digests compile to the same binary. Binds, never compiles."""
    source, target, options = _bind(launch, arch)
    return hashlib.sha256(f"{source.hash()}-{target}-{options.hash()}".encode()).hexdigest()


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
    parts: list[CompileResult] = []
    artifacts: list[dict[str, bytes]] = []
    try:
        for launch in kernel.launches(typed, config):
            compiled = compile_launch(launch, arch)
            parts.append(_resources(compiled))
            if keep_artifacts:
                artifacts.append(_cache_artifacts(compiled))
            if keep_artifacts and host_modules:
                artifacts.extend(e for e in host_stub_entries(compiled)
                                 if e["__dir__"] not in {a.get("__dir__") for a in artifacts})
    except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raise there
        status, text = classify_compile_error(exc)
        return CompileResult(status, reason=text, seconds=time.perf_counter() - start)
    result = _combined(parts, arch, int(config.get("num_warps", 4)))
    return replace(result, seconds=time.perf_counter() - start, artifacts=artifacts)


def _resources(compiled: Any) -> CompileResult:
    """An ok result with one compiled launch's shared memory, registers and spills."""
    regs, spills = cubin_resources(compiled.asm["cubin"])
    return CompileResult("ok", compiled.metadata.shared, regs, spills)


def _compile_nth(kernel_name: str, problem: dict[str, Any], config: dict[str, Any], index: int,
                 target: str) -> CompileResult:
    """Compile launch ``index`` of one candidate (a job of ``compile_many``); never raises for a bad config."""
    import time

    from aotune.tuner.failures import classify_compile_error

    kernel = get_kernel(kernel_name)
    start = time.perf_counter()
    try:
        result = _resources(compile_launch(kernel.launches(kernel.problem(problem), config)[index], get_arch(target)))
    except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raise there
        status, text = classify_compile_error(exc)
        return CompileResult(status, reason=text, seconds=time.perf_counter() - start)
    return replace(result, seconds=time.perf_counter() - start)


def _launch_identities(kernel_name: str, problem: dict[str, Any], config: dict[str, Any],
                       arch: Arch) -> list[str] | CompileResult:
    """The identities of a candidate's launches, or its result when it cannot be built (invalid, or an
    error while making its launches)."""
    from aotune.tuner.failures import classify_compile_error

    kernel = get_kernel(kernel_name)
    typed = kernel.problem(problem)
    reason = kernel.space.check(config, typed)
    if reason:
        return CompileResult("invalid", reason=reason)
    try:
        return [launch_identity(launch, arch) for launch in kernel.launches(typed, config)]
    except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raise there
        status, text = classify_compile_error(exc)
        return CompileResult(status, reason=text)


def _combined(parts: list[CompileResult], arch: Arch, num_warps: int) -> CompileResult:
    """One candidate's result from its launches': the first failure, else the largest shared memory and
    register count and the spills summed, checked against ``arch``'s limits."""
    seconds = sum(part.seconds for part in parts)
    for part in parts:
        if not part.fits:
            return CompileResult(part.status, reason=part.reason, seconds=seconds)
    result = CompileResult("ok", max((p.shared_bytes for p in parts), default=0),
                           max((p.registers for p in parts), default=0), sum(p.spills for p in parts), None, seconds)
    return _check_limits(result, arch, num_warps)


def compile_many(kernel_name: str, jobs: Sequence[tuple[dict[str, Any], dict[str, Any]]], target: str, *,
                 workers: int | None = None) -> list[CompileResult]:
    """``compile_candidate`` (without artifacts) of many (problem, config) pairs, in the order given, each
    distinct launch (``launch_identity``) compiled once, in ``workers`` parallel processes. Candidates share
    launches often (the MoE's activation and reduce kernels; a config key that changes one GEMM leaves the
    other's binary alone): the MoE decode sweep of ``tests/bench/bench_mxfp4_moe.py`` has 7,434 launches and
    3,278 distinct ones. Under the interpreter the whole call runs in a child process that compiles for real.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    if interpreting():
        with _compiler_env(), _pool(1) as pool:
            return pool.submit(compile_many, kernel_name, jobs, target, workers=workers).result()
    arch = get_arch(target)
    plans = [_launch_identities(kernel_name, problem, config, arch) for problem, config in jobs]
    first: dict[str, tuple[int, int]] = {}  # identity -> (job, launch index) that compiles it
    for i, plan in enumerate(plans):
        if isinstance(plan, list):
            for j, ident in enumerate(plan):
                first.setdefault(ident, (i, j))
    columns = ([kernel_name] * len(first), [jobs[i][0] for i, _ in first.values()],
               [jobs[i][1] for i, _ in first.values()], [j for _, j in first.values()], [target] * len(first))
    workers = max(1, min(len(first), workers or os.cpu_count() or 1))
    if workers == 1:
        compiled = list(map(_compile_nth, *columns))
    else:
        with _pool(workers) as pool:
            compiled = list(pool.map(_compile_nth, *columns))
    by_identity = dict(zip(first, compiled))
    return [plan if isinstance(plan, CompileResult)
            else _combined([by_identity[ident] for ident in plan], arch, int(config.get("num_warps", 4)))
            for plan, (_problem, config) in zip(plans, jobs)]


def _cache_path(kernel_name: str, problem: dict[str, Any], config: dict[str, Any], target: str) -> Path:
    kernel = get_kernel(kernel_name)
    ident = json.dumps([kernel_name, kernel.version, kernel.problem(problem).key, config_key(config),
                        get_arch(target).name, triton.__version__])
    root = Path(os.environ.get("AOTUNE_COMPILE_CACHE", Path.home() / ".cache" / "aotune" / "compile"))
    return root / f"{hashlib.sha256(ident.encode()).hexdigest()}.json"


def _read_cached(path: Path) -> CompileResult | None:
    if path.is_file():
        try:
            return CompileResult(**{k: v for k, v in json.loads(path.read_text()).items() if k != "fits"})
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
    return None


def _write_cached(path: Path, result: CompileResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.summary()))
    tmp.replace(path)


def compile_cached(kernel_name: str, problem: dict[str, Any], config: dict[str, Any], target: str) -> CompileResult:
    """``compile_candidate`` behind an on-disk cache of its summary (artifacts are not cached here)."""
    path = _cache_path(kernel_name, problem, config, target)
    result = _read_cached(path)
    if result is None:
        result = compile_candidate(kernel_name, problem, config, target)
        _write_cached(path, result)
    return result


def compile_space(kernel_name: str, problem: dict[str, Any], configs: list[dict[str, Any]], target: str,
                  *, jobs: int | None = None) -> list[CompileResult]:
    """Compile many candidates of one problem in parallel processes (``compile_many``) behind the on-disk
    cache of summaries, in the order given."""
    paths = [_cache_path(kernel_name, problem, config, target) for config in configs]
    results = [_read_cached(path) for path in paths]
    missing = [i for i, result in enumerate(results) if result is None]
    fresh = compile_many(kernel_name, [(problem, configs[i]) for i in missing], target, workers=jobs)
    for i, result in zip(missing, fresh):
        _write_cached(paths[i], result)
        results[i] = result
    return results  # type: ignore[return-value]  # every None was filled
