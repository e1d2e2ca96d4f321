"""Programmatic dependent launch (config ``PDL``, ``kernels/_pdl.py``): where it exists, how the decode calls'
launches are chained, what the chained kernels compile to (CPU host, sm_90), and on a GPU that a chained call
computes exactly what the plain one does (workspaces poisoned with NaN, eager and in CUDA graphs)."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect

import pytest
import torch

from aotune.cache_db.identity import INTERPRETER, DeviceClass
from aotune.kernels import _pdl, flash_mla, get_kernel, mxfp4_moe, rel_error
from aotune.kernels._mla_space import SparseDecodeProblem
from aotune.kernels.mxfp4_moe import MoEProblem, fused_moe, fused_moe_ref, make_inputs

from .helpers_moe import poison_workspaces

V4_TP8 = dict(K=4096, I=256, E=256, top_k=6)
GPT_OSS = dict(K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True)
MMA = dict(PATH="mma", BLOCK_M=8, BLOCK_N=32, BLOCK_K=256, GROUP_M=1, SPLIT_K=1, DEQ="group_asm", num_warps=1,
           num_stages=1)
GEMV = dict(PATH="gemv", BLOCK_M=1, BLOCK_N=16, BLOCK_K=512, GROUP_M=1, SPLIT_K=1, DEQ="group_asm", num_warps=1,
            num_stages=3)
V32_TP8 = dict(S_q=1, H=16, topk=2048, layout="v32", page_size=64)
V4_MLA_TP8 = dict(S_q=1, H=8, topk=512, layout="v4", page_size=256, extra_topk=128, has_sink=True)


def _mla_config(path: str, splits: int) -> dict:
    if path == "mma":
        return dict(PATH="mma", BLOCK_T=16, H_TILE=16, NUM_SPLITS=splits, num_warps=4, num_stages=1)
    return dict(PATH="triton", BLOCK_T=32, H_TILE=16, NUM_SPLITS=splits, num_warps=4, num_stages=1)


@pytest.mark.parametrize("capability,device,expected", [
    ((9, 0), "cuda", True), ((12, 0), "cuda", True), ((8, 9), "cuda", False), ((9, 0), "cpu", False)])
def test_supported_on_sm90_and_later(capability: tuple, device: str, expected: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(dev: torch.device) -> DeviceClass:
        if dev.type != "cuda":
            return INTERPRETER
        return DeviceClass("nvidia", f"sm_{capability[0]}{capability[1]}", "gpu", 232448, 132)

    monkeypatch.setattr(_pdl, "device_class", probe)
    assert _pdl.supported(torch.device(device, 0) if device == "cuda" else torch.device(device)) is expected


def test_pdl_is_a_config_parameter_of_the_chained_paths() -> None:
    """MoE: 0 or 1 on the gemv and mma paths, 0 elsewhere; FlashMLA: 1 needs splits; a config without the key
    is valid and unchained; the runtime defaults turn it on only where measured faster, on sm_90+ devices."""
    problem = MoEProblem(M=1, **V4_TP8)
    assert mxfp4_moe.SPACE.check(dict(GEMV, PDL=1), problem) is None
    assert mxfp4_moe.SPACE.check(dict(MMA, PDL=1), problem) is None
    assert mxfp4_moe.SPACE.check(GEMV, problem) is None  # no key: off
    assert "not chained" in mxfp4_moe.SPACE.check(dict(mxfp4_moe.SPACE.default, PDL=1), problem)
    assert "0 or 1" in mxfp4_moe.SPACE.check(dict(GEMV, PDL=2), problem)
    pdl = {c.get("PDL", 0) for c in mxfp4_moe.SPACE.configs() if c["PATH"] in ("gemv", "mma")}
    assert pdl == {0, 1} and all(c["PDL"] == 0 for c in mxfp4_moe.SPACE.configs() if c["PATH"] in ("decode", "prefill"))
    mla = SparseDecodeProblem(B=1, **V32_TP8)
    assert flash_mla.SPACE.check(dict(_mla_config("mma", 8), PDL=1), mla) is None
    assert "NUM_SPLITS > 1" in flash_mla.SPACE.check(dict(_mla_config("mma", 1), PDL=1), mla)
    hopper = DeviceClass.from_properties("NVIDIA H100 80GB HBM3", 9, 0, 232448, 132)
    ampere = DeviceClass.from_properties("NVIDIA A100-SXM4-80GB", 8, 0, 166912, 108)
    assert mxfp4_moe.runtime_default(problem, hopper)["PDL"] == 1  # the gemv default at M * I <= 512
    assert mxfp4_moe.runtime_default(problem, ampere).get("PDL", 0) == 0
    assert mxfp4_moe.runtime_default(MoEProblem(M=8, **V4_TP8), hopper).get("PDL", 0) == 0  # the mma default
    assert flash_mla.runtime_default(mla, hopper)["PDL"] == 1
    assert flash_mla.runtime_default(mla, ampere) is None  # sm_80: the Triton space default (no fp8 cvt)


def test_pdl_refuses_a_device_without_it() -> None:
    """The interpreter (and any GPU before sm_90) has no PDL: a config asking for it is a ValueError."""
    problem = MoEProblem(M=2, K=64, I=64, E=4, top_k=2)
    with pytest.raises(ValueError, match="PDL 1"):
        fused_moe(**make_inputs(problem, 0, "cpu"), config=dict(GEMV, DEQ="arith", BLOCK_K=64, PDL=1))
    mla = SparseDecodeProblem(B=1, S_q=1, H=2, topk=32, layout="v4", page_size=16)
    with pytest.raises(ValueError, match="PDL 1"):
        flash_mla.sparse_decode(**flash_mla.KERNEL.make_inputs(mla, 0, "cpu"), config=dict(_mla_config("triton", 2),
                                                                                           BLOCK_T=16, PDL=1))


def test_moe_prefetches_where_the_active_weights_are_small() -> None:
    """V4-Flash TP 8 at M = 1 (6 experts, 10 MB) prefetches; at M = 8 (48 experts, 80 MB) and TP 1 (80 MB at
    M = 1) it does not; PDL 0 chains nothing."""
    on = dict(GEMV, PDL=1)
    assert mxfp4_moe.pdl_of(MoEProblem(M=1, **V4_TP8), on) == (True, True)
    assert mxfp4_moe.pdl_of(MoEProblem(M=8, **V4_TP8), on) == (True, False)
    assert mxfp4_moe.pdl_of(MoEProblem(M=1, **dict(V4_TP8, I=2048)), on) == (True, False)
    assert mxfp4_moe.pdl_of(MoEProblem(M=1, **V4_TP8), GEMV) == (False, False)


@pytest.mark.parametrize("config,names", [
    (dict(MMA, SPLIT_K=4), ["_moe_mma1", "_moe_act", "_moe_mma2", "_moe_reduce"]),
    (MMA, ["_moe_mma1", "_moe_mma2", "_moe_reduce"]),
    (dict(GEMV, SPLIT_K=4), ["_moe_gemv1", "_moe_act", "_moe_gemv2", "_moe_reduce"])])
def test_moe_chain(config: dict, names: list[str]) -> None:
    """PDL 1: every kernel's PDL on, every launch but the first a PDL launch, the second GEMM prefetching where
    the active weights are small; PDL 0: the launches of before (no PDL keys at all)."""
    for m, prefetch in ((1, True), (8, False)):
        problem = MoEProblem(M=m, **V4_TP8)
        plain = mxfp4_moe.launches(problem, config)
        assert [launch.fn.__name__ for launch in plain] == names
        assert not any({"PDL", "PREFETCH", "launch_pdl"} & set(launch.kwargs) for launch in plain)
        chained = mxfp4_moe.launches(problem, dict(config, PDL=1))
        assert [launch.fn.__name__ for launch in chained] == names
        assert all(launch.kwargs["PDL"] for launch in chained)
        assert [launch.kwargs.get("launch_pdl", False) for launch in chained] == [False] + [True] * (len(names) - 1)
        assert [launch.kwargs.get("PREFETCH") for launch in chained] == [
            prefetch if "2" in name else None for name in names]
        assert [_signature(launch.args) for launch in chained] == [_signature(launch.args) for launch in plain]


def _signature(args: tuple) -> list:
    return [(tuple(a.shape), a.dtype, a.stride()) if isinstance(a, torch.Tensor) else a for a in args]


def test_moe_chain_leaves_the_tensor_core_paths_alone() -> None:
    """The decode and prefill paths' kernels have no PDL constexprs: their plans are never chained (and the
    space says so)."""
    problem = MoEProblem(M=1, **V4_TP8)
    for config in (dict(mxfp4_moe.SPACE.default), dict(mxfp4_moe.SPACE.default, PATH="decode", BLOCK_M=16, GROUP_M=1)):
        assert mxfp4_moe.SPACE.check(config, problem) is None
        chained = mxfp4_moe.launches(problem, dict(config, PDL=1))
        assert not any({"PDL", "PREFETCH", "launch_pdl"} & set(launch.kwargs) for launch in chained)


@pytest.mark.parametrize("path", ["triton", "mma"])
def test_mla_chain(path: str) -> None:
    """With split-KV the combine is a PDL dependent of the split pass; without splits nothing changes."""
    problem = SparseDecodeProblem(B=1, **V32_TP8)
    split = flash_mla.launches(problem, dict(_mla_config(path, 8), PDL=1))
    assert [launch.fn.__name__ for launch in split] == [
        "mla_decode_mma_kernel" if path == "mma" else "mla_decode_kernel", "mla_combine_kernel"]
    assert split[0].kwargs["PDL"] and "launch_pdl" not in split[0].kwargs
    assert split[1].kwargs["PDL"] and split[1].kwargs["launch_pdl"]
    single = flash_mla.launches(problem, dict(_mla_config(path, 1), PDL=1))
    assert len(single) == 1 and "PDL" not in single[0].kwargs


def _compiled_chains(jobs: list[tuple[str, dict, dict]]) -> list[tuple[str, bool, int, int, int]]:
    """(kernel, launch_pdl, waits, launch_dependents, L2 prefetches) of every launch of ``jobs`` (kernel module,
    problem fields, config), compiled for sm_90; runs in a child process (real compilation)."""
    from aotune.tuner.arch import get_arch
    from aotune.tuner.feasibility import compile_launch

    launches = []
    for module, fields, config in jobs:
        if module == "mxfp4_moe":
            launches += mxfp4_moe.launches(MoEProblem(**fields), config)
        else:
            launches += flash_mla.launches(SparseDecodeProblem(**fields), config)
    out = []
    for launch in launches:
        compiled = compile_launch(launch, get_arch("sm_90"))
        ptx = compiled.asm["ptx"]
        out.append((launch.fn.__name__, bool(compiled.metadata.launch_pdl), ptx.count("griddepcontrol.wait"),
                    ptx.count("griddepcontrol.launch_dependents"), ptx.count("cp.async.bulk.prefetch.L2.global")))
    return out


def test_chained_kernels_compile_for_sm90() -> None:
    """Real compilation (CPU host): the first launch only lets the next start, the middle ones let the next start
    and wait, the last one only waits; the second GEMM prefetches its weight and scale rows; the launch
    attribute is in the compiled metadata."""
    pytest.importorskip("triton.backends.nvidia")
    from aotune.tuner.feasibility import _compiler_env, _pool

    jobs = [("mxfp4_moe", dict(M=1, **V4_TP8), dict(MMA, SPLIT_K=4, PDL=1)),
            ("mxfp4_moe", dict(M=2, **V4_TP8), dict(GEMV, SPLIT_K=2, PDL=1)),
            ("flash_mla", dict(B=2, **V4_MLA_TP8), dict(_mla_config("mma", 4), PDL=1))]
    with _compiler_env(), _pool(1) as pool:
        compiled = pool.submit(_compiled_chains, jobs).result()
    assert [c[0] for c in compiled] == ["_moe_mma1", "_moe_act", "_moe_mma2", "_moe_reduce", "_moe_gemv1",
                                        "_moe_act", "_moe_gemv2", "_moe_reduce", "mla_decode_mma_kernel",
                                        "mla_combine_kernel"]
    for name, launch_pdl, waits, launch_dependents, prefetches in compiled:
        first = name in ("_moe_mma1", "_moe_gemv1", "mla_decode_mma_kernel")
        last = name in ("_moe_reduce", "mla_combine_kernel")
        assert launch_pdl is not first, name
        assert bool(waits) is not first, name
        assert bool(launch_dependents) is not last, name
        assert prefetches == (2 if name in ("_moe_mma2", "_moe_gemv2") else 0), name


def _kernel_module_imports(module_name: str, seen: set[str]) -> set[str]:
    """The ``aotune.kernels`` modules that ``module_name`` imports, transitively, other than the package's
    infrastructure (base, space, device, runtime, the interpreter fix)."""
    infra = {"aotune.kernels", "aotune.kernels.base", "aotune.kernels.space", "aotune.kernels.device",
             "aotune.kernels.runtime", "aotune.kernels._interpreter_fix", "aotune.kernels.triton_key"}
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aotune.kernels"):
            found.add(node.module)
            if hasattr(importlib.import_module(node.module), "__path__"):  # a package: its names may be modules
                found.update(f"{node.module}.{a.name}" for a in node.names
                             if importlib.util.find_spec(f"{node.module}.{a.name}") is not None)
    found -= infra | seen
    seen |= found
    for name in sorted(found):
        _kernel_module_imports(name, seen)
    return seen


@pytest.mark.parametrize("name", ["mxfp4_moe", "flash_mla", "mqa_logits"])
def test_source_modules_cover_every_kernel_module(name: str) -> None:
    """A kernel's version hashes its ``source_modules``: each module its code imports must be one of them, or
    a change there would keep the version, and bundles tuned on the old code would still match."""
    kernel = get_kernel(name)
    used = _kernel_module_imports(f"aotune.kernels.{name}", set())
    assert used <= set(kernel.source_modules), sorted(used - set(kernel.source_modules))


@pytest.mark.gpu
@pytest.mark.parametrize("fields,m,config", [
    (V4_TP8, 1, dict(MMA, SPLIT_K=4)), (V4_TP8, 8, MMA), (V4_TP8, 1, dict(GEMV, SPLIT_K=4)),
    (GPT_OSS, 2, dict(MMA, SPLIT_K=2)), (GPT_OSS, 1, GEMV)], ids=["mma-split", "mma", "gemv-split", "gpt-oss-mma",
                                                                  "gpt-oss-gemv"])
def test_gpu_moe_chain_matches_plain(fields: dict, m: int, config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager and replayed in a CUDA graph over new routings, the chained call equals the plain one (to 1e-6
    where the second GEMM's splits add with atomics) and the reference."""
    atomic = config["PATH"] == "gemv" and config["SPLIT_K"] > 1
    poison_workspaces(monkeypatch, ("split_ws", "inter") + (("dst",) if not atomic else ()))
    problem = MoEProblem(M=m, **fields)
    assert _pdl.supported(torch.device("cuda")), "PDL needs sm_90 or later"
    chained = dict(config, PDL=1)
    inputs = make_inputs(problem, 0, "cuda")
    graph, out = torch.cuda.CUDAGraph(), None
    fused_moe(**inputs, config=chained)
    with torch.cuda.graph(graph):
        out = fused_moe(**inputs, config=chained)
    for seed in range(1, 6):
        inputs["topk_ids"].copy_(make_inputs(problem, seed, "cuda")["topk_ids"])
        eager = fused_moe(**inputs, config=chained)
        graph.replay()
        plain = fused_moe(**inputs, config=config)
        for got in (eager, out):
            assert (rel_error(got, plain) <= 1e-6) if atomic else torch.equal(got, plain), seed
        assert rel_error(plain, fused_moe_ref(**inputs)) <= 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["triton", "mma"])
@pytest.mark.parametrize("fields", [V32_TP8, V4_MLA_TP8], ids=["v32", "v4"])
def test_gpu_mla_chain_matches_plain(fields: dict, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The combine as a PDL dependent (split partials poisoned with NaN first) gives the plain call's bits."""
    outputs = flash_mla._outputs

    def poisoned(q: torch.Tensor, splits: int, *args: object) -> tuple:
        out, lse, parts = outputs(q, splits, *args)
        for part in (parts or ())[:2]:  # the fp32 partials (the tickets, if any, must stay 0)
            part.fill_(float("nan"))
        return out, lse, parts

    monkeypatch.setattr(flash_mla, "_outputs", poisoned)
    problem = SparseDecodeProblem(B=3, **fields)
    config, chained = _mla_config(path, 8), dict(_mla_config(path, 8), PDL=1)
    inputs = flash_mla.KERNEL.make_inputs(problem, 5, "cuda")
    plain = flash_mla.sparse_decode(**inputs, config=config)
    eager = flash_mla.sparse_decode(**inputs, config=chained)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = flash_mla.sparse_decode(**inputs, config=chained)
    for _ in range(3):
        graph.replay()
        for got in (eager, captured):
            assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])
    ref = flash_mla.sparse_decode_ref(**inputs)
    assert rel_error(plain[0], ref[0]) <= 1e-2
