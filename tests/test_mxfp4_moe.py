"""MXFP4 MoE: the reference against a per-token loop of KERNELS.md, the Triton kernel against the
reference (both paths, both activations, layouts, biases, negative ids, split-K, tails), validation,
the config space and its SGLang baselines, AOT feasibility on sm_120, the Gluon mma path (space, CPU
refusal, real sm_90 / sm_120 compilation); GPU tests at real shapes."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from aotune.cache_db import loader
from aotune.cache_db.identity import DeviceClass
from aotune.kernels import get_kernel, mxfp4_moe, rel_error, runtime
from aotune.kernels.formats.mxfp4 import dequantize_mxfp4, pad_rows
from aotune.kernels.mxfp4_moe import (
    KERNEL, SPACE, MoEProblem, fused_moe, fused_moe_ref, launches, make_inputs, runtime_default,
)

from .helpers_moe import poison_workspaces

DEVICE = os.environ.get("AOTUNE_TEST_DEVICE", "cpu")
CFG = dict(PATH="decode", BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, GROUP_M=1, SPLIT_K=1, DEQ="arith",
           num_warps=4, num_stages=2)


def _loop_reference(inputs: dict) -> torch.Tensor:
    """KERNELS.md section 1 literally: per token, per slot, fp64 except the two bf16 roundings."""
    x, ids, tw = inputs["x"], inputs["topk_ids"], inputs["topk_weights"]
    g_size, act, limit = inputs["group_size"], inputs["activation"], inputs["swiglu_limit"]
    if act == "swiglu_oai" and limit is None:
        limit = 7.0
    out = torch.zeros(x.shape, dtype=torch.float64)
    for m in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[m, j])
            if e < 0:
                continue
            w13 = dequantize_mxfp4(inputs["w13"][e], inputs["w13_scale"][e], g_size).double()
            h = (x[m].double() @ w13.T).to(torch.bfloat16).double()
            if inputs.get("w13_bias") is not None:
                h = h + inputs["w13_bias"][e].double()
            half = h.shape[0] // 2
            if act == "swiglu_oai" or inputs["layout"] == "interleaved":
                g, u = h[0::2], h[1::2]
            elif inputs["layout"] == "gate_up":
                g, u = h[:half], h[half:]
            else:
                g, u = h[half:], h[:half]
            if limit is not None:
                g, u = g.clamp(max=limit), u.clamp(-limit, limit)
            a = g * torch.sigmoid(g) * u if act == "swiglu" else g * torch.sigmoid(1.702 * g) * (u + 1)
            w2 = dequantize_mxfp4(inputs["w2"][e], inputs["w2_scale"][e], g_size).double()
            y = a.to(torch.bfloat16).double() @ w2.T
            if inputs.get("w2_bias") is not None:
                y = y + inputs["w2_bias"][e].double()
            out[m] += float(tw[m, j]) * y
    return (out * inputs["routed_scaling_factor"]).to(torch.bfloat16)


def _inputs(problem: MoEProblem, seed: int = 0, device: str = "cpu", negative: bool = True) -> dict:
    inputs = make_inputs(problem, seed, device)
    if negative and problem.M > 1:
        inputs["topk_ids"][1, -1] = -1  # an expert on another rank
    return inputs


@pytest.mark.parametrize("activation,layout,bias", [
    ("swiglu", "gate_up", False), ("swiglu", "up_gate", True), ("swiglu_oai", "interleaved", True),
])
def test_reference_matches_per_token_loop(activation: str, layout: str, bias: bool) -> None:
    problem = MoEProblem(M=4, K=64, I=32, E=5, top_k=2, activation=activation, layout=layout, has_bias=bias)
    inputs = _inputs(problem, seed=1)
    assert rel_error(fused_moe_ref(**inputs), _loop_reference(inputs)) <= 1e-2


CASES = [  # (problem fields, config overrides): odd M, K/I tails, both paths, split-K, group 16
    (dict(M=5, K=160, I=96, E=6, top_k=3), dict(PATH="decode")),
    (dict(M=5, K=160, I=96, E=6, top_k=3, layout="up_gate"), dict(PATH="prefill", GROUP_M=8)),
    (dict(M=3, K=96, I=128, E=4, top_k=2, layout="interleaved"), dict(PATH="decode", SPLIT_K=2, BLOCK_N=64)),
    (dict(M=7, K=160, I=96, E=5, top_k=2, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(PATH="decode")),
    (dict(M=7, K=96, I=128, E=5, top_k=2, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(PATH="prefill", SPLIT_K=2)),
    (dict(M=9, K=128, I=48, E=3, top_k=2, group_size=16), dict(PATH="prefill", BLOCK_M=16)),
    (dict(M=20, K=64, I=64, E=2, top_k=2), dict(PATH="decode", BLOCK_M=16)),  # 20 rows per expert: 2 chunks
    (dict(M=4, K=96, I=64, E=3, top_k=2, layout="up_gate"), dict(PATH="decode", DEQ="group")),
    (dict(M=3, K=64, I=64, E=2, top_k=2, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(PATH="prefill", DEQ="group")),
]
_GEMV = dict(PATH="gemv", num_stages=1)
GEMV_CASES = [  # the FMA path: 1 or 2 tokens per pass, K/I tails, split-K, tiny tiles, group 16, all layouts
    (dict(M=5, K=160, I=96, E=6, top_k=3), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=64)),
    (dict(M=5, K=160, I=96, E=6, top_k=3, layout="up_gate"), dict(_GEMV, BLOCK_M=2, BLOCK_N=32, BLOCK_K=64)),
    (dict(M=3, K=96, I=128, E=4, top_k=2, layout="interleaved"),
     dict(_GEMV, BLOCK_M=2, BLOCK_N=8, BLOCK_K=32, SPLIT_K=2)),
    (dict(M=7, K=96, I=96, E=5, top_k=2, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_GEMV, BLOCK_M=2, BLOCK_N=16, BLOCK_K=32, SPLIT_K=2)),
    (dict(M=9, K=128, I=48, E=3, top_k=2, group_size=16), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=32)),
    (dict(M=20, K=64, I=64, E=2, top_k=2), dict(_GEMV, BLOCK_M=2, BLOCK_N=32, BLOCK_K=64)),  # 10 passes
    # K split 4 of the first GEMM: splits of 128, a 32-wide tail in the third, the fourth past K (384 > 288)
    (dict(M=4, K=288, I=64, E=3, top_k=2, layout="up_gate"), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=64,
                                                                  SPLIT_K=4)),
    (dict(M=3, K=96, I=96, E=4, top_k=2, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_GEMV, BLOCK_M=2, BLOCK_N=8, BLOCK_K=32, SPLIT_K=2)),
    # pipelined K loop (one activation row per step, broadcast in registers): 1 and 2 tokens, tails, splits
    (dict(M=5, K=160, I=96, E=6, top_k=3), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=32, num_stages=3)),
    (dict(M=7, K=96, I=96, E=5, top_k=2, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_GEMV, BLOCK_M=2, BLOCK_N=16, BLOCK_K=32, SPLIT_K=2, num_stages=2)),
    (dict(M=4, K=288, I=64, E=3, top_k=2, layout="up_gate"), dict(_GEMV, BLOCK_M=2, BLOCK_N=16, BLOCK_K=64,
                                                                  SPLIT_K=4, num_stages=4)),
]


@pytest.mark.parametrize("fields,overrides", CASES + GEMV_CASES)
def test_kernel_matches_reference(fields: dict, overrides: dict) -> None:
    problem = MoEProblem(**fields)
    inputs = _inputs(problem, seed=fields["M"])
    out = fused_moe(**inputs, config=dict(CFG, **overrides))
    assert rel_error(out, fused_moe_ref(**inputs)) <= 1e-2


def test_wide_scales_no_limit_and_inputs_untouched() -> None:
    problem = MoEProblem(M=4, K=64, I=64, E=3, top_k=2)
    inputs = _inputs(problem, seed=5)
    gen = torch.Generator().manual_seed(9)
    for name in ("w13_scale", "w2_scale"):
        inputs[name] = torch.randint(100, 141, inputs[name].shape, generator=gen, dtype=torch.uint8)
    inputs.update(swiglu_limit=None, routed_scaling_factor=2.5)
    before = {k: v.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    out = fused_moe(**inputs, config=dict(CFG, PATH="prefill"))
    assert rel_error(out, fused_moe_ref(**inputs)) <= 1e-2
    assert all(torch.equal(inputs[k], v) for k, v in before.items())


def test_all_ids_negative_gives_zero_and_m_zero_is_empty() -> None:
    problem = MoEProblem(M=2, K=64, I=32, E=3, top_k=2)
    inputs = _inputs(problem, negative=False)
    inputs["topk_ids"].fill_(-1)
    assert torch.equal(fused_moe(**inputs, config=CFG), torch.zeros(2, 64, dtype=torch.bfloat16))
    inputs.update(x=inputs["x"][:0], topk_ids=inputs["topk_ids"][:0], topk_weights=inputs["topk_weights"][:0])
    assert fused_moe(**inputs, config=dict(CFG, PATH="prefill")).shape == (0, 64)


@pytest.mark.parametrize("name,value,match", [
    ("x", "float", "x:"), ("x", "noncontig", "x:"), ("w13", "short", "w13"), ("w2_scale", "short", "w2_scale"),
    ("topk_ids", "int64", "topk_ids"), ("topk_ids", "range", "topk_ids"), ("topk_weights", "bf16", "topk_weights"),
    ("activation", "gelu", "activation"), ("layout", "gate_down", "layout"), ("group_size", 24, "group_size"),
    ("w13_bias", "alone", "w2_bias"), ("config", "bad", "config"), ("config", "asm_on_cpu", "config"),
])
def test_validation_names_the_argument(name: str, value: object, match: str) -> None:
    inputs = _inputs(MoEProblem(M=3, K=64, I=32, E=4, top_k=2))
    kwargs: dict = {"config": CFG}
    edits = {
        ("x", "float"): lambda: inputs.update(x=inputs["x"].float()),
        ("x", "noncontig"): lambda: inputs.update(x=torch.randn(64, 3).to(torch.bfloat16).T),
        ("w13", "short"): lambda: inputs.update(w13=inputs["w13"][:, :, :-1].contiguous()),
        ("w2_scale", "short"): lambda: inputs.update(w2_scale=inputs["w2_scale"][:-1].contiguous()),
        ("topk_ids", "int64"): lambda: inputs.update(topk_ids=inputs["topk_ids"].long()),
        ("topk_ids", "range"): lambda: inputs["topk_ids"].__setitem__((0, 0), 4),
        ("topk_weights", "bf16"): lambda: inputs.update(topk_weights=inputs["topk_weights"].bfloat16()),
        ("w13_bias", "alone"): lambda: inputs.update(w13_bias=torch.zeros(4, 64)),
        ("config", "bad"): lambda: kwargs.update(config=dict(CFG, PATH="decode", BLOCK_M=128)),
        ("config", "asm_on_cpu"): lambda: kwargs.update(config=dict(CFG, DEQ="group_asm")),
    }
    if (name, value) in edits:
        edits[(name, value)]()
    else:
        inputs[name] = value
    with pytest.raises(ValueError, match=match):
        fused_moe(**inputs, **kwargs)
    if name != "config":
        with pytest.raises(ValueError, match=match):
            fused_moe_ref(**inputs)


def _padded(inputs: dict, pitch: int = 128) -> dict:
    return dict(inputs, **{k: pad_rows(inputs[k], pitch) for k in ("w13", "w13_scale", "w2", "w2_scale")})


@pytest.mark.parametrize("overrides", [{}, dict(PATH="prefill"),
                                       dict(_GEMV, BLOCK_M=2, BLOCK_N=16, BLOCK_K=32, SPLIT_K=2, num_stages=2)])
def test_padded_weight_rows_give_the_same_output(overrides: dict) -> None:
    """Weights and scales whose rows start every 128 bytes (``pad_rows``, zeros in between) give bitwise the
    output of the contiguous ones, on each path the interpreter runs (the kernels take the row strides)."""
    problem = MoEProblem(M=3, K=64, I=64, E=3, top_k=2, activation="swiglu_oai", layout="interleaved",
                         has_bias=True)
    inputs = _inputs(problem, seed=5)
    padded = _padded(inputs)
    assert padded["w13"].stride() == (2 * 64 * 128, 128, 1) and not padded["w2_scale"].is_contiguous()
    config = dict(CFG, **overrides)
    assert torch.equal(fused_moe(**padded, config=config), fused_moe(**inputs, config=config))
    assert torch.equal(fused_moe_ref(**padded), fused_moe_ref(**inputs))


def test_pad_rows_and_the_strides_fused_moe_refuses() -> None:
    inputs = _inputs(MoEProblem(M=3, K=64, I=32, E=4, top_k=2))
    w13 = inputs["w13"]
    view = pad_rows(w13, 48)
    assert torch.equal(view, w13) and view.stride() == (64 * 48, 48, 1)
    assert fused_moe(**dict(inputs, w13=view), config=CFG).shape == (3, 64)
    for bad, match in ((torch.zeros(4, 64, 40, dtype=torch.uint8)[:, :, :32], "w13: must be contiguous, or rows "
                        "padded to a multiple of 16 bytes"),  # 40-byte rows: not 16-byte aligned
                       (w13.transpose(0, 1).contiguous().transpose(0, 1), "w13: must be contiguous")):
        with pytest.raises(ValueError, match=match):
            fused_moe(**dict(inputs, w13=bad), config=CFG)
    scales = torch.zeros(4, 64, 5, dtype=torch.uint8)[:, :, :2].copy_(inputs["w13_scale"])
    assert fused_moe(**dict(inputs, w13_scale=scales), config=CFG).shape == (3, 64)  # any scale row pitch
    with pytest.raises(ValueError, match="pitch"):
        pad_rows(w13, 100)


def test_space_baselines_and_default() -> None:
    sglang = SPACE.baseline("sglang_sm120")
    assert len(sglang) == 8 and all(set(c) == set(SPACE.params) for c in sglang)
    assert {c["PATH"] for c in sglang} == {"decode", "prefill"}
    for fields in (dict(M=1, K=4096, I=256, E=256, top_k=6), dict(M=4096, K=2880, I=2880, E=128, top_k=4)):
        assert SPACE.check(SPACE.default, MoEProblem(**fields)) is None
    big = MoEProblem(M=4096, K=4096, I=256, E=256, top_k=6)
    assert "decode" in SPACE.check(dict(SPACE.default, PATH="decode"), big)
    assert get_kernel("mxfp4_moe") is KERNEL and KERNEL.cost(big).flops == 6 * 4096 * 6 * 256 * 4096


@pytest.mark.parametrize("overrides", [dict(PATH="decode"), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=32)])
def test_skipped_slots_never_reach_the_output(overrides: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-slot fp32 rows of slots with id < 0 are never written; the reduce reads them and must drop them."""
    poison_workspaces(monkeypatch, ("dst",))
    problem = MoEProblem(M=3, K=64, I=32, E=4, top_k=3)
    inputs = _inputs(problem, seed=2)
    inputs["topk_ids"][0, :2] = -1
    out = fused_moe(**inputs, config=dict(CFG, **overrides))
    assert not out.isnan().any() and rel_error(out, fused_moe_ref(**inputs)) <= 1e-2


H100 = DeviceClass("nvidia", "sm_90", "h100-80gb-hbm3", 232448, 132)


@pytest.mark.parametrize("device,mma", [(H100, True), (dataclasses.replace(H100, arch="sm_120"), True),
                                        (dataclasses.replace(H100, arch="sm_75"), False),
                                        (dataclasses.replace(H100, vendor="amd", arch="gfx942"), False),
                                        (runtime.INTERPRETER, False)])
def test_runtime_default_is_the_mma_path_on_nvidia_sm80_and_later(device: DeviceClass, mma: bool) -> None:
    """The measured rule (mxfp4_moe's runtime defaults): on sm_80+ mma BN 32 / 1 warp up to M = 16 and
    BN 128 / 4 warps up to 128, gemv where M * I <= 512; elsewhere gemv up to M = 8; then the space default."""
    v4_tp1, v4_tp8 = dict(K=4096, I=2048, E=256, top_k=6), dict(K=4096, I=256, E=256, top_k=6)
    oss = dict(K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True)
    expected = {  # (fields, M): (PATH, BLOCK_N) on an sm_80+ GPU
        (0, 1): ("mma", 32), (1, 1): ("gemv", 16), (1, 2): ("gemv", 16), (1, 4): ("mma", 32), (2, 8): ("mma", 32),
        (2, 16): ("mma", 32), (0, 17): ("mma", 128), (2, 32): ("mma", 128), (1, 128): ("mma", 128),
        (0, 129): (None, None),
    }
    for (which, m), want in expected.items():
        problem = MoEProblem(M=m, **(v4_tp1, v4_tp8, oss)[which])
        if not mma:
            want = ("gemv", 16) if m <= 8 else (None, None)
        default = runtime_default(problem, device)
        got = (default["PATH"], default["BLOCK_N"]) if default else (None, None)
        assert got == want, (which, m)
        assert default is None or SPACE.check(default, problem) is None
        if got == ("mma", 128):  # the second GEMM's 4-tile loop where K and I allow it (not gpt-oss's I = 2880)
            assert default.get("DOWN_TILES", 1) == (1 if which == 2 else 4), (which, m)
        assert runtime.default_configs(KERNEL, problem, device)[0] == (default or SPACE.default)
    # where the mma path is invalid (group 16), the gemv default at decode sizes, else the space default
    assert runtime_default(MoEProblem(M=4, group_size=16, **v4_tp1), H100)["PATH"] == "gemv"
    assert runtime_default(MoEProblem(M=32, group_size=16, **v4_tp1), H100) is None


def test_runtime_default_is_gemv_at_decode_and_runs_without_a_bundle() -> None:
    decode = MoEProblem(M=3, K=640, I=96, E=5, top_k=2)  # K not a multiple of BLOCK_K 512: tail steps
    first = runtime.default_configs(KERNEL, decode, runtime.INTERPRETER)[0]
    assert first == runtime_default(decode, runtime.INTERPRETER) and first["PATH"] == "gemv"
    assert SPACE.check(first, decode) is None
    for other in (MoEProblem(M=9, K=4096, I=256, E=256, top_k=6),  # past the decode bound, not a GPU
                  MoEProblem(M=2, K=160, I=96, E=6, top_k=3)):  # BLOCK_K 512 is invalid for K=160
        assert runtime_default(other, runtime.INTERPRETER) is None
        assert runtime.default_configs(KERNEL, other, runtime.INTERPRETER)[0] == SPACE.default
    inputs = _inputs(decode, seed=4)
    loader.configure([], defaults=False)  # no bundle: the launcher falls back to the runtime default
    runtime._MEMO.clear()
    try:
        assert rel_error(fused_moe(**inputs), fused_moe_ref(**inputs)) <= 1e-2
        assert dict(runtime.resolve(KERNEL, decode, runtime.INTERPRETER).config) == first
    finally:
        loader.configure()
        runtime._MEMO.clear()


@pytest.mark.gpu
@pytest.mark.parametrize("m,block_n", [(4, 32), (32, 128)])
def test_gpu_runtime_default_without_a_bundle_is_the_mma_path(m: int, block_n: int) -> None:
    problem = MoEProblem(M=m, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved",
                         has_bias=True)
    inputs = _inputs(problem, seed=5, device="cuda")
    loader.configure([], defaults=False)
    runtime._MEMO.clear()
    try:
        config = runtime.resolve_config(KERNEL, problem, inputs["x"].device)
        assert (config["PATH"], config["BLOCK_N"]) == ("mma", block_n)
        assert rel_error(fused_moe(**inputs), fused_moe_ref(**inputs)) <= 1e-2
    finally:
        loader.configure()
        runtime._MEMO.clear()


def test_launches_on_meta_tensors() -> None:
    problem = MoEProblem(M=33, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved",
                         has_bias=True)
    prefill = launches(problem, dict(CFG, PATH="prefill", BLOCK_M=64))
    decode = launches(problem, CFG)
    assert [launch.fn.__name__ for launch in prefill] == ["_moe_align", "_moe_gemm1", "_moe_gemm2", "_moe_reduce"]
    assert [launch.fn.__name__ for launch in decode] == ["_moe_gemm1", "_moe_gemm2", "_moe_reduce"]
    gemv = launches(problem, dict(CFG, PATH="gemv", BLOCK_M=2, num_stages=1))
    assert [launch.fn.__name__ for launch in gemv] == ["_moe_gemv1", "_moe_gemv2", "_moe_reduce"]
    split = launches(problem, dict(CFG, PATH="gemv", BLOCK_M=1, num_stages=1, SPLIT_K=4))
    assert [launch.fn.__name__ for launch in split] == ["_moe_gemv1", "_moe_act", "_moe_gemv2", "_moe_reduce"]


@pytest.mark.parametrize("overrides,reason", [
    (dict(PATH="gemv", BLOCK_M=16, num_stages=1), "BLOCK_M"),
    (dict(PATH="gemv", BLOCK_M=1, DEQ="dot_scaled", num_stages=1), "DEQ"),
    (dict(PATH="gemv", BLOCK_M=1, GROUP_M=8, num_stages=1), "GROUP_M"),
    (dict(PATH="decode", BLOCK_M=2), "tl.dot"),
    (dict(PATH="prefill", BLOCK_N=16), "tl.dot"),
])
def test_space_keeps_paths_apart(overrides: dict, reason: str) -> None:
    problem = MoEProblem(M=4, K=4096, I=256, E=256, top_k=6)
    assert SPACE.check(dict(CFG, PATH="gemv", BLOCK_M=1, num_stages=1), problem) is None
    assert reason in SPACE.check(dict(CFG, **overrides), problem)


def test_kernel_interface_runs_against_reference() -> None:
    problem = KERNEL.problem(dict(M=3, K=64, I=32, E=4, top_k=2, activation="swiglu_oai",
                                  layout="interleaved", has_bias=True))
    inputs = KERNEL.make_inputs(problem, 3, "cpu")
    assert KERNEL.compare(KERNEL.run(inputs, CFG), KERNEL.reference(inputs)) <= KERNEL.tolerance


def test_sm120_feasibility_drops_what_does_not_fit() -> None:
    pytest.importorskip("triton.backends.nvidia")
    from aotune.tuner.feasibility import compile_candidate

    problem = dict(M=4096, K=4096, I=256, E=256, top_k=6)
    big = dict(CFG, PATH="prefill", BLOCK_M=128, BLOCK_N=256, BLOCK_K=256, num_warps=8, num_stages=4)
    small = dict(CFG, PATH="prefill", BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_stages=2)
    assert compile_candidate("mxfp4_moe", problem, big, "sm_120").status == "out_of_resources"
    fits = compile_candidate("mxfp4_moe", problem, small, "sm_120")
    assert fits.status == "ok" and 0 < fits.shared_bytes <= 101376


_MMA = dict(PATH="mma", BLOCK_M=8, BLOCK_N=64, BLOCK_K=128, GROUP_M=1, SPLIT_K=1, DEQ="group_asm", num_warps=2,
            num_stages=1)


def test_mma_path_launches_and_space() -> None:
    problem = MoEProblem(M=8, K=4096, I=256, E=256, top_k=6)
    assert SPACE.check(_MMA, problem) is None
    runs = launches(problem, _MMA)
    assert [launch.fn.__name__ for launch in runs] == ["_moe_mma1", "_moe_mma2", "_moe_reduce"]
    # the first GEMM's routing (a count and the slots by rank per slot, T_PAD 64), read by the second
    assert runs[0].args[7].shape == (48, 65) and runs[0].args[7] is runs[1].args[7]
    assert "multiples of 32" in SPACE.check(_MMA, MoEProblem(M=8, K=4096, I=720, E=128, top_k=4))
    assert "group_size 32" in SPACE.check(_MMA, MoEProblem(M=8, K=128, I=128, E=4, top_k=2, group_size=16))
    assert "not 128 or 256" in SPACE.check(dict(_MMA, BLOCK_K=64), problem)
    assert "16 gate and 16 up rows" in SPACE.check(dict(_MMA, BLOCK_N=64, num_warps=4), problem)
    assert "DEQ group_asm" in SPACE.check(dict(_MMA, DEQ="arith"), problem)
    assert "needs BLOCK_K 128" in SPACE.check(dict(_MMA, BLOCK_K=256, num_stages=2), problem)
    assert SPACE.check(dict(_MMA, num_stages=3), problem) is None
    assert any(c["PATH"] == "mma" and SPACE.check(c, problem) is None for c in SPACE.configs())


def test_mma_path_splits_the_first_gemm() -> None:
    """SPLIT_K on the mma path splits the first GEMM's K into whole BLOCK_K steps, launches no empty split
    and adds the activation launch of the split sums; the second GEMM is not split (no zeroed buffer)."""
    problem = MoEProblem(M=8, K=4096, I=256, E=256, top_k=6)
    split = dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, SPLIT_K=4)
    assert SPACE.check(split, problem) is None
    runs = launches(problem, split)
    assert [launch.fn.__name__ for launch in runs] == ["_moe_mma1", "_moe_act", "_moe_mma2", "_moe_reduce"]
    assert runs[0].kwargs["SPLIT"] == 4 and runs[1].kwargs["SPLIT"] == 4
    assert runs[0].args[5].shape == (4, 48, 512) and runs[0].args[5] is runs[1].args[0]  # fp32 slabs
    assert runs[0].args[14] == 4  # split_steps
    assert mxfp4_moe._down_splits(split, problem) == 1
    assert mxfp4_moe.mma_split_steps(split, problem) == (4, 4)  # 16 steps of 256
    # 2880 = 22.5 steps of 128: 4 splits of 6 steps, the last 4.5; 1536 = 6 steps: 4 asked, 3 of 2 launched
    gpt_oss = MoEProblem(M=8, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved")
    assert mxfp4_moe.mma_split_steps(dict(split, BLOCK_K=128), gpt_oss) == (4, 6)
    assert mxfp4_moe.mma_split_steps(split, MoEProblem(M=8, K=1536, I=256, E=8, top_k=2)) == (3, 2)
    assert launches(MoEProblem(M=8, K=1536, I=256, E=8, top_k=2), split)[0].kwargs["SPLIT"] == 3
    assert "leaves less than BLOCK_K of K=512" in SPACE.check(split, MoEProblem(M=8, K=512, I=256, E=8, top_k=2))
    assert "SPLIT_K <= 4" in SPACE.check(dict(split, SPLIT_K=8), problem)
    assert [launch.fn.__name__ for launch in launches(problem, dict(split, SPLIT_K=1))][1] == "_moe_mma2"


def test_mma_down_tiles_space_and_grid() -> None:
    """DOWN_TILES: the second GEMM's programs each loop over that many row tiles (fewer programs, one
    pipeline), only on the mma path with the register double buffer and whole tiles and steps; 1 (or no key,
    as in older bundles) launches exactly what it did before."""
    problem = MoEProblem(M=32, K=4096, I=256, E=256, top_k=6)
    base = dict(_MMA, BLOCK_N=128, BLOCK_K=256, num_warps=4)
    tiled = dict(base, DOWN_TILES=4)
    assert SPACE.check(tiled, problem) is None
    gemm2 = launches(problem, tiled)[1]
    assert gemm2.fn.__name__ == "_moe_mma2" and gemm2.kwargs["TILES"] == 4
    assert "TILES" not in launches(problem, base)[1].kwargs
    assert launches(problem, base)[1].kwargs == launches(problem, dict(base, DOWN_TILES=1))[1].kwargs
    assert "num_stages 1" in SPACE.check(dict(tiled, BLOCK_K=128, num_stages=2), problem)
    assert "only the mma path" in SPACE.check(dict(CFG, DOWN_TILES=2), problem)
    assert "1, 2, 4 or 8" in SPACE.check(dict(tiled, DOWN_TILES=3), problem)
    gpt_oss = MoEProblem(M=8, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved")
    assert "whole tiles and steps" in SPACE.check(dict(tiled, BLOCK_N=64, num_warps=2), gpt_oss)  # I % 256
    assert "exceeds K=512" in SPACE.check(dict(tiled, DOWN_TILES=8), MoEProblem(M=8, K=512, I=256, E=8, top_k=2))
    tiled_configs = [c for c in SPACE.configs() if c.get("DOWN_TILES", 1) > 1]
    assert tiled_configs and {c["PATH"] for c in tiled_configs} == {"mma"}


def test_mma_down_tiles_grid_covers_every_tile() -> None:
    """The second GEMM's grid: ceil(ceil(K / BLOCK_N) / DOWN_TILES) programs per slot (the last one takes
    the tiles left: 12 tiles of 128 in programs of 8 are 8 + 4)."""
    for k, bn, tiles, programs in ((4096, 128, 4, 8), (1536, 128, 8, 2), (4096, 32, 8, 16), (512, 64, 2, 4)):
        problem = MoEProblem(M=5, K=k, I=256, E=16, top_k=2)
        config = dict(_MMA, BLOCK_N=bn, BLOCK_K=256, num_warps=bn // 64 or 1, DOWN_TILES=tiles)
        assert SPACE.check(config, problem) is None, (k, bn, tiles)
        launch, grid = mxfp4_moe.meta_plan(problem, config)[1]
        assert launch.fn.__name__ == "_moe_mma2" and grid == (10, programs), (k, bn, tiles)


def test_mma_path_refuses_the_cpu() -> None:
    inputs = _inputs(MoEProblem(M=3, K=64, I=32, E=4, top_k=2))
    with pytest.raises(ValueError, match="PATH 'mma'"):
        fused_moe(**inputs, config=dict(_MMA, BLOCK_N=32, num_warps=1))


@pytest.mark.parametrize("target", ["sm_90", "sm_120"])
def test_mma_path_compiles_with_register_fragments(target: str) -> None:
    """Real compilation (CPU host): the decoded weights and the activations reach the MMA fragments with
    no data movement (``assert_trivial`` fails the build otherwise) and without spills."""
    pytest.importorskip("triton.backends.nvidia")
    from aotune.tuner.feasibility import compile_candidate

    for fields, config in ((dict(M=8, K=4096, I=2048, E=256, top_k=6), _MMA),
                           (dict(M=9, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai",
                                 layout="interleaved", has_bias=True), dict(_MMA, BLOCK_N=32, num_warps=1)),
                           (dict(M=8, K=4096, I=2048, E=256, top_k=6),
                            dict(_MMA, BLOCK_N=32, num_warps=1, num_stages=3)),
                           (dict(M=8, K=4096, I=256, E=256, top_k=6),  # the first GEMM's K split
                            dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, SPLIT_K=4)),
                           (dict(M=32, K=4096, I=256, E=256, top_k=6, has_bias=True),  # second GEMM's tile loop
                            dict(_MMA, BLOCK_N=128, BLOCK_K=256, num_warps=4, DOWN_TILES=4)),
                           (dict(M=32, K=4096, I=2048, E=256, top_k=6), mxfp4_moe._MMA_DEFAULT)):  # runtime default
        result = compile_candidate("mxfp4_moe", fields, config, target)
        assert result.status == "ok", result.reason
        ring = config["num_stages"] * config["BLOCK_N"] * 64 if config["num_stages"] > 1 else 0  # weight tiles
        assert result.spills == 0 and result.shared_bytes <= ring + 4096  # + routing scratch


GPU_CASES = [  # DeepSeek-V4-Flash TP 8 and gpt-oss-120b TP 1, both paths and both dequant modes
    (dict(M=1, K=4096, I=256, E=256, top_k=6), dict(PATH="decode", BLOCK_N=64, BLOCK_K=128)),
    (dict(M=8, K=4096, I=256, E=256, top_k=6), dict(PATH="decode", BLOCK_N=64, BLOCK_K=256, DEQ="group")),
    (dict(M=5, K=4096, I=256, E=256, top_k=6), dict(PATH="decode", BLOCK_N=64, BLOCK_K=128, DEQ="group_asm")),
    (dict(M=32, K=4096, I=256, E=256, top_k=6), dict(PATH="decode", BLOCK_N=64, BLOCK_K=128, DEQ="dot_scaled")),
    (dict(M=333, K=4096, I=256, E=256, top_k=6), dict(PATH="prefill", BLOCK_M=64, BLOCK_N=128, BLOCK_K=128,
                                                       GROUP_M=8, num_warps=8)),
    (dict(M=1024, K=4096, I=256, E=256, top_k=6), dict(PATH="prefill", BLOCK_M=64, BLOCK_N=128, BLOCK_K=128,
                                                        DEQ="group", num_warps=8)),
    (dict(M=8, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(PATH="decode", BLOCK_N=64, BLOCK_K=128, SPLIT_K=2, DEQ="group")),
    (dict(M=3, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(PATH="decode", BLOCK_N=128, BLOCK_K=128, DEQ="dot_scaled", num_warps=8)),
    (dict(M=77, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(PATH="prefill", BLOCK_M=32, BLOCK_N=128, BLOCK_K=128, DEQ="group_asm", num_warps=8)),
    (dict(M=517, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(PATH="prefill", BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, DEQ="dot_scaled", num_warps=8)),
    (dict(M=1, K=4096, I=256, E=256, top_k=6), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=256, DEQ="group_asm",
                                                     num_warps=2)),
    (dict(M=32, K=4096, I=2048, E=256, top_k=6), dict(_GEMV, BLOCK_M=2, BLOCK_N=64, BLOCK_K=256,
                                                       DEQ="group_asm", SPLIT_K=2)),
    (dict(M=8, K=4096, I=256, E=256, top_k=6), dict(_GEMV, BLOCK_M=1, BLOCK_N=32, BLOCK_K=128)),
    (dict(M=2, K=4096, I=256, E=256, top_k=6), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=512, SPLIT_K=4,
                                                     DEQ="group_asm", num_warps=2)),
    (dict(M=5, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_GEMV, BLOCK_M=2, BLOCK_N=32, BLOCK_K=256, DEQ="group_asm")),  # 2880 % 256: masked tails
    # the pipelined K loop (cp.async through shared memory) at real shapes
    (dict(M=8, K=4096, I=2048, E=256, top_k=6), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=512, DEQ="group_asm",
                                                      num_warps=1, num_stages=3)),
    (dict(M=3, K=4096, I=256, E=256, top_k=6), dict(_GEMV, BLOCK_M=2, BLOCK_N=32, BLOCK_K=512, SPLIT_K=4,
                                                     DEQ="group_asm", num_warps=2, num_stages=2)),
    (dict(M=6, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=256, DEQ="group_asm", num_warps=1, num_stages=4)),
    # the tensor-core decode path (Gluon, register fragments): V4-Flash TP 8 / TP 1, gpt-oss (bias, 2880 =
    # 22.5 spans of 128: a masked partial span), V3 (K 7168), more than 8 tokens on one expert (E 8)
    (dict(M=1, K=4096, I=256, E=256, top_k=6), dict(_MMA, BLOCK_N=32, num_warps=1)),
    (dict(M=8, K=4096, I=256, E=256, top_k=6), _MMA),
    (dict(M=32, K=4096, I=2048, E=256, top_k=6), dict(_MMA, BLOCK_N=128, num_warps=4)),
    (dict(M=9, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_MMA, BLOCK_K=256)),
    (dict(M=5, K=7168, I=256, E=32, top_k=8, layout="up_gate"), dict(_MMA, BLOCK_N=32, BLOCK_K=128, num_warps=1)),
    (dict(M=40, K=512, I=256, E=8, top_k=2), dict(_MMA, BLOCK_N=128, num_warps=2)),
    (dict(M=3, K=4096, I=2048, E=256, top_k=6, has_bias=True), dict(_MMA, BLOCK_N=64, num_warps=1)),  # R 4
    (dict(M=6, K=160, I=96, E=4, top_k=2), dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1)),  # only tail spans
    # the first GEMM's K split (fp32 partial sums, then the activation launch): V4-Flash TP 8 at 2 and 4
    # splits, gpt-oss (2880: the last split ends in a masked partial span; biases), the ring, V3's K 7168
    (dict(M=8, K=4096, I=256, E=256, top_k=6), dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, SPLIT_K=2)),
    (dict(M=1, K=4096, I=256, E=256, top_k=6), dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, SPLIT_K=4)),
    (dict(M=32, K=4096, I=256, E=256, top_k=6), dict(_MMA, BLOCK_N=128, BLOCK_K=256, num_warps=4, SPLIT_K=4)),
    (dict(M=9, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_MMA, BLOCK_N=32, num_warps=1, SPLIT_K=4)),
    (dict(M=9, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_MMA, BLOCK_N=64, num_warps=2, num_stages=3, SPLIT_K=2)),
    (dict(M=40, K=7168, I=256, E=8, top_k=2, layout="up_gate"), dict(_MMA, BLOCK_N=64, num_warps=1, SPLIT_K=4)),
    # 6 steps of 256 asked in 4 splits: 3 launched; 4.25 steps of 128: the last of 3 splits is one tail group
    (dict(M=7, K=1536, I=256, E=16, top_k=4), dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, SPLIT_K=4)),
    (dict(M=7, K=544, I=256, E=16, top_k=4), dict(_MMA, BLOCK_N=32, num_warps=1, num_stages=3, SPLIT_K=4)),
    # weights through a shared-memory ring (cp.async), more stages than steps at V4-Flash TP 8's I = 256
    (dict(M=8, K=4096, I=256, E=256, top_k=6), dict(_MMA, num_stages=4)),
    (dict(M=32, K=4096, I=2048, E=256, top_k=6), dict(_MMA, BLOCK_N=128, num_warps=4, num_stages=3)),
    (dict(M=9, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_MMA, BLOCK_N=32, num_warps=1, num_stages=2)),
    # the runtime default at decode (portable E2M1 decode), V4-Flash TP 8 and gpt-oss (2880: K tails)
    (dict(M=4, K=4096, I=256, E=256, top_k=6), dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=512, DEQ="arith",
                                                     num_warps=1, num_stages=3)),
    (dict(M=9, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_GEMV, BLOCK_M=1, BLOCK_N=16, BLOCK_K=512, DEQ="arith", num_warps=1, num_stages=3)),
]


@pytest.mark.gpu
def test_gpu_mma_split_reads_only_what_it_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mma path's K split: its fp32 slabs, the intermediate and the per-slot rows start as NaN, so a value
    read but never written (a split's range, a slot, a column) would reach the output."""
    poison_workspaces(monkeypatch)
    problem = MoEProblem(M=9, K=2880, I=2880, E=128, top_k=4, activation="swiglu_oai", layout="interleaved",
                         has_bias=True)
    inputs = _inputs(problem, seed=4, device="cuda")
    inputs["topk_ids"][0, :2] = -1
    out = fused_moe(**inputs, config=dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, SPLIT_K=4))
    assert not out.isnan().any() and rel_error(out, fused_moe_ref(**inputs)) <= 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("fields,overrides", GPU_CASES)
def test_gpu_real_shapes(fields: dict, overrides: dict) -> None:
    problem = MoEProblem(**fields)
    inputs = _inputs(problem, seed=fields["M"], device="cuda")
    out = fused_moe(**inputs, config=dict(CFG, **overrides))
    assert rel_error(out, fused_moe_ref(**inputs)) <= 1e-2


def _shift_scales(scale: torch.Tensor, by: int) -> None:
    scale.copy_((scale.to(torch.int32) + by).to(torch.uint8))


@pytest.mark.gpu
@pytest.mark.parametrize("fields", [dict(K=4096, I=2048), dict(K=2880, I=2880, activation="swiglu_oai",
                                                               layout="interleaved", has_bias=True)],
                         ids=["v4-flash", "gpt-oss-tails"])
@pytest.mark.parametrize("stages,split", [(1, 1), (3, 1), (1, 2)])
def test_gpu_mma_fast_decode_falls_back_on_large_scales(fields: dict, stages: int, split: int) -> None:
    """The mma path's fast decode is exact for scale bytes 0-133; a CTA that reads a larger one recomputes
    on the exact decode. Three groups of tokens, each routed only to its own experts, are checked apart:
    A (experts 0-3: w13 bytes 128-136, its CTAs fall back; w2 bytes 96-104), B (experts 4-7: w2 bytes
    125-133, the top of the fast range), C (experts 8-15: the w2 rows of the first output tile at bytes
    146-154, so only that tile's CTAs fall back; the other columns are checked on their own)."""
    bn = 128
    problem = MoEProblem(M=30, E=16, top_k=2, **fields)
    inputs = _inputs(problem, seed=3, device="cuda", negative=False)
    _shift_scales(inputs["w13_scale"][0:4], 12)
    _shift_scales(inputs["w2_scale"][0:4], -20)
    _shift_scales(inputs["w2_scale"][4:8], 9)
    _shift_scales(inputs["w2_scale"][8:16, :bn], 30)
    ids = torch.arange(problem.M * 2, device="cuda").reshape(problem.M, 2)
    groups = {"A": (slice(0, 10), 0, 4), "B": (slice(10, 20), 4, 4), "C": (slice(20, 30), 8, 8)}
    for rows, first, count in groups.values():
        inputs["topk_ids"][rows] = (first + ids[rows] % count).to(torch.int32)
    config = dict(_MMA, BLOCK_N=bn, BLOCK_K=256 if stages == 1 else 128, num_warps=4, num_stages=stages,
                  SPLIT_K=split)
    out, ref = fused_moe(**inputs, config=config), fused_moe_ref(**inputs)
    for name, (rows, _, _) in groups.items():
        if name == "C":
            for cols in (slice(0, bn), slice(bn, None)):
                assert rel_error(out[rows, cols], ref[rows, cols]) <= 1e-2, (name, cols)
        else:
            assert rel_error(out[rows], ref[rows]) <= 1e-2, name


DOWN_TILES_CASES = [  # (problem fields, config, DOWN_TILES)
    # V4-Flash TP 8 at its tuned tiles (one step per tile; the first GEMM split), M = 8 and 32
    (dict(M=8, K=4096, I=256, E=256, top_k=6), dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, SPLIT_K=2), 4),
    (dict(M=32, K=4096, I=256, E=256, top_k=6), dict(_MMA, BLOCK_N=128, BLOCK_K=256, num_warps=4, SPLIT_K=2), 8),
    # 12 tiles in programs of 8 (the last takes 4), 4 steps per tile, biases
    (dict(M=7, K=1536, I=512, E=16, top_k=4, has_bias=True), dict(_MMA, BLOCK_N=64, BLOCK_K=128, num_warps=2), 8),
    # more than 8 tokens on an expert (two passes over the tiles), up_gate rows
    (dict(M=40, K=512, I=256, E=8, top_k=2, layout="up_gate"), dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1), 2),
]


@pytest.mark.gpu
@pytest.mark.parametrize("pdl", [0, 1])
@pytest.mark.parametrize("fields,config,tiles", DOWN_TILES_CASES, ids=["tp8-m8", "tp8-m32", "uneven", "passes"])
def test_gpu_mma_down_tiles_equal_one_tile(fields: dict, config: dict, tiles: int, pdl: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The second GEMM's tile loop sums each tile in the same order as one tile per program: the same bits,
    with the per-slot rows and the intermediate starting as NaN (a column never written would show), eagerly
    and with PDL (the second GEMM's L2 prefetch covers the program's rows); and a program that reads a scale
    byte above the fast decode's range redoes all its tiles on the exact decode."""
    poison_workspaces(monkeypatch)
    problem = MoEProblem(**fields)
    inputs = _inputs(problem, seed=fields["M"], device="cuda")
    plain = dict(config, PDL=pdl)
    tiled = dict(plain, DOWN_TILES=tiles)
    assert SPACE.check(tiled, problem) is None
    out = fused_moe(**inputs, config=tiled)
    assert torch.equal(out, fused_moe(**inputs, config=plain))
    assert rel_error(out, fused_moe_ref(**inputs)) <= 1e-2
    _shift_scales(inputs["w2_scale"][:, config["BLOCK_N"]:2 * config["BLOCK_N"]], 30)  # one tile of every expert
    out = fused_moe(**inputs, config=tiled)
    assert rel_error(out, fused_moe(**inputs, config=plain)) <= 1e-6
    assert rel_error(out, fused_moe_ref(**inputs)) <= 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("config", [dict(CFG, BLOCK_N=64, BLOCK_K=128), _MMA, dict(_MMA, SPLIT_K=2),
                                    dict(_MMA, DOWN_TILES=4)], ids=["decode", "mma", "mma-split", "mma-down-tiles"])
def test_gpu_cuda_graph_replay_follows_new_routing(config: dict) -> None:
    problem = MoEProblem(M=8, K=4096, I=256, E=256, top_k=6)
    inputs = _inputs(problem, device="cuda")
    fused_moe(**inputs, config=config)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_moe(**inputs, config=config)
    inputs["topk_ids"].copy_(make_inputs(problem, 7, "cuda")["topk_ids"])
    graph.replay()
    assert rel_error(out, fused_moe_ref(**inputs)) <= 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("fields,config", [
    (dict(M=8, K=2880, I=2880, E=32, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1)),
    (dict(M=32, K=2880, I=2880, E=32, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(_MMA, BLOCK_N=64, BLOCK_K=256, num_warps=2, SPLIT_K=2, PDL=1)),
    (dict(M=8, K=4096, I=256, E=64, top_k=6), dict(_MMA, BLOCK_N=32, BLOCK_K=256, num_warps=1, DOWN_TILES=4)),
    (dict(M=1, K=2880, I=2880, E=32, top_k=4, activation="swiglu_oai", layout="interleaved", has_bias=True),
     dict(CFG, PATH="gemv", BLOCK_M=1, BLOCK_N=16, BLOCK_K=256, DEQ="group_asm", num_warps=1, num_stages=3)),
], ids=["oss-m8", "oss-m32-split-pdl", "v4-down-tiles", "oss-gemv"])
def test_gpu_padded_weight_rows_give_the_same_output(fields: dict, config: dict) -> None:
    """The GPU paths (16-byte weight loads, L2 prefetch of row ranges) on weights and scales padded to a
    128-byte row pitch: bitwise the contiguous weights' output."""
    inputs = _inputs(MoEProblem(**fields), seed=fields["M"], device="cuda")
    assert torch.equal(fused_moe(**_padded(inputs), config=config), fused_moe(**inputs, config=config))
