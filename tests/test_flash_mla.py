"""FlashMLA sparse decode: reference vs a direct softmax, kernel vs reference (interpreter and GPU),
lonely rows, sinks, the extra cache, split-KV, validation, the config space and sm_120 feasibility."""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch
import triton
import triton.language as tl

from aotune.cache_db import loader
from aotune.cache_db.identity import DeviceClass
from aotune.kernels import flash_mla, max_rel_error, rel_error, runtime
from aotune.kernels._mla_kernels import _fp8_byte
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem, launches, sparse_decode, sparse_decode_ref
from aotune.kernels.formats.mla_kv import pack_kv_v4, pack_kv_v32, unpack_kv_v4, unpack_kv_v32

DEVICE = os.environ.get("AOTUNE_TEST_DEVICE", "cpu")


def _cfg(block_t: int = 16, h_tile: int = 16, splits: int = 1, warps: int = 4, stages: int = 1) -> dict:
    return {"BLOCK_T": block_t, "H_TILE": h_tile, "NUM_SPLITS": splits, "num_warps": warps, "num_stages": stages}


def _inputs(seed: int = 0, **fields: object) -> dict:
    base = dict(B=2, S_q=1, H=3, topk=40, layout="v32", page_size=16)
    base.update(fields)
    return KERNEL.make_inputs(SparseDecodeProblem(**base), seed, DEVICE)


def _check(inputs: dict, config: dict, tol: float = 1e-2) -> None:
    out, lse = sparse_decode(**inputs, config=config)
    ref_out, ref_lse = sparse_decode_ref(**inputs)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    assert rel_error(out, ref_out) <= tol, rel_error(out, ref_out)
    assert rel_error(lse, ref_lse) <= 1e-3, rel_error(lse, ref_lse)


def _direct(inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query softmax over the dequantized tokens, one (b, s, h) at a time, in float64."""
    unpack = unpack_kv_v32 if inputs["layout"] == "v32" else unpack_kv_v4
    q = inputs["q"].double()
    B, S_q, H, _ = q.shape
    out, lse = torch.zeros(B, S_q, H, 512, dtype=torch.float64), torch.full((B, H, S_q), -math.inf, dtype=torch.float64)
    sources = [("kv_cache", "indices", "topk_length"), ("extra_kv_cache", "extra_indices", "extra_topk_length")]
    for b in range(B):
        for s in range(S_q):
            rows = []
            for cache, idx, length in sources:
                if inputs.get(cache) is None:
                    continue
                kv = unpack(inputs[cache], inputs["page_size"]).double()
                for t, i in enumerate(inputs[idx][b, s].tolist()):
                    if 0 <= i < len(kv) and (inputs.get(length) is None or t < inputs[length][b]):
                        rows.append(kv[i])
            if not rows:
                continue
            kv = torch.stack(rows)
            for h in range(H):
                scores = kv @ q[b, s, h] * inputs["sm_scale"]
                lse[b, h, s] = torch.logsumexp(scores, 0)
                out[b, s, h] = torch.softmax(scores, 0) @ kv[:, :512]
                if inputs.get("attn_sink") is not None:
                    out[b, s, h] /= 1 + math.exp(inputs["attn_sink"][h] - lse[b, h, s])
    return out, lse


@pytest.mark.parametrize("fields", [dict(), dict(layout="v4", extra_topk=20, has_sink=True, has_topk_length=True,
                                                  S_q=2)])
def test_reference_matches_direct_softmax(fields: dict) -> None:
    inputs = _inputs(1, **fields)
    inputs["indices"][0, 0, :5] = 10**6  # out of range: invalid like -1
    if "topk_length" in inputs:
        inputs["topk_length"][1] = 0
    assert max_rel_error(sparse_decode_ref(**inputs), _direct(inputs)) < 1e-6


@pytest.mark.parametrize("fields,config", [
    (dict(), _cfg()),
    (dict(H=5, topk=50), _cfg(block_t=16, h_tile=4, splits=3)),
    (dict(S_q=2, H=17, has_topk_length=True), _cfg(block_t=32, h_tile=16, splits=2)),
    (dict(layout="v4", H=3, topk=24, extra_topk=9, has_sink=True), _cfg(splits=1)),
    (dict(layout="v4", H=8, topk=40, extra_topk=20, has_sink=True, has_topk_length=True), _cfg(h_tile=8, splits=4)),
    # num_stages 3: Triton's pipeliner instead of the register pipeline (one tile per split, and several)
    (dict(H=5, topk=50, has_topk_length=True), _cfg(block_t=16, h_tile=8, splits=2, stages=3)),
    (dict(layout="v4", H=3, topk=40, extra_topk=9, has_sink=True), _cfg(block_t=32, splits=1, stages=3)),
    # the combine's column blocks: 512 columns per program up to 16 splits, 256 at 32 (64: 128, below)
    (dict(layout="v4", H=2, topk=200, extra_topk=30, has_sink=True, has_topk_length=True), _cfg(splits=16)),
    (dict(H=2, topk=500, has_topk_length=True), _cfg(splits=32)),
    # 32 splits of 21 tiles run as 21 (launch_splits): 256 combine columns, as 64 // 21 = 3 is no power of two
    (dict(B=1, H=2, topk=300, extra_topk=20, layout="v4", page_size=64, has_sink=True), _cfg(splits=32)),
])
def test_kernel_matches_reference(fields: dict, config: dict) -> None:
    _check(_inputs(2, **fields), config)


@pytest.mark.parametrize("lonely", ["-inf", "+inf"])
@pytest.mark.parametrize("splits", [1, 2])
def test_lonely_rows_and_masked_tiles(lonely: str, splits: int) -> None:
    inputs = _inputs(3, B=3, H=2, topk=48, layout="v4", extra_topk=16, has_sink=True, has_topk_length=True)
    inputs["indices"][0] = -1  # request 0: no valid main position, its extra tokens decide
    inputs["extra_indices"][0, :, ::2] = -1
    inputs["indices"][1, :, :32] = -1  # two fully masked tiles before valid ones
    inputs["topk_length"][2], inputs["extra_topk_length"][2] = 0, 0  # request 2 is lonely
    out, lse = sparse_decode(**inputs, lonely_lse=lonely, config=_cfg(splits=splits))
    ref_out, ref_lse = sparse_decode_ref(**inputs, lonely_lse=lonely)
    assert torch.all(out[2] == 0) and torch.all(lse[2] == float(lonely))
    assert rel_error(out, ref_out) <= 1e-2 and rel_error(lse, ref_lse) <= 1e-3


def _extreme(inputs: dict, tiny: bool) -> dict:
    """Huge and tiny q rows, huge and tiny KV scales (or only tiny ones) and invalid positions in every tile."""
    layout, page, H = inputs["layout"], inputs["page_size"], inputs["q"].shape[2]
    head_scale = torch.tensor([3e4, 1e-6, 1.0, 5e2], device=inputs["q"].device).repeat(H // 4 + 1)[:H]
    inputs["q"] = (inputs["q"].float() * head_scale[:, None]).to(torch.bfloat16)
    unpack, pack = (unpack_kv_v32, pack_kv_v32) if layout == "v32" else (unpack_kv_v4, pack_kv_v4)
    kv = unpack(inputs["kv_cache"], page)
    if tiny:
        kv *= 1e-9
    else:
        kv[::2] *= 1e4
        kv[1::2] *= 1e-4
    inputs["kv_cache"] = pack(kv, page)
    inputs["indices"][:, :, 3::5] = -1
    inputs["sm_scale"] = 1.0 if tiny else 1e-7
    return inputs


@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("layout", ["v32", "v4"])
def test_extreme_magnitudes(layout: str, tiny: bool) -> None:
    """bf16 K/V tiles scaled in fp32 before the rounding: huge and tiny q rows and KV scales, and tiles
    of tiny scales next to invalid positions, stay accurate."""
    _check(_extreme(_inputs(8, H=4, topk=40, layout=layout), tiny), _cfg(splits=2))


def test_padded_pages_and_fp8_dtype() -> None:
    inputs = _inputs(4, H=4, topk=32)
    cache = inputs["kv_cache"]
    padded = torch.zeros(cache.shape[0], 17, 656, dtype=torch.uint8, device=cache.device)
    padded[:, :16] = cache
    inputs["kv_cache"] = padded[:, :16].view(torch.float8_e4m3fn)
    _check(inputs, _cfg(splits=2))


def test_does_not_write_inputs() -> None:
    inputs = _inputs(5, H=2, topk=20, layout="v4")
    before = {k: v.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    sparse_decode(**inputs, config=_cfg(splits=2))
    assert all(torch.equal(before[k], inputs[k]) for k in before)


@pytest.mark.parametrize("change,name", [
    (dict(layout="v3"), "layout"), (dict(page_size=32), "kv_cache"), (dict(sm_scale=-1.0), "sm_scale"),
    (dict(d_v=448), "d_v"), (dict(lonely_lse="nan"), "lonely_lse"),
])
def test_validation_names_argument(change: dict, name: str) -> None:
    inputs = _inputs(6, H=2, topk=8)
    inputs.update(change)
    with pytest.raises(ValueError, match=name):
        sparse_decode(**inputs, config=_cfg())


def test_validation_of_tensors() -> None:
    inputs = _inputs(7, H=2, topk=8)
    for key, value, name in [("q", inputs["q"].float(), "q"), ("indices", inputs["indices"].long(), "indices"),
                             ("topk_length", torch.ones(3, dtype=torch.int32), "topk_length"),
                             ("attn_sink", torch.ones(3), "attn_sink"), ("extra_indices", inputs["indices"], "extra")]:
        with pytest.raises(ValueError, match=name):
            sparse_decode(**{**inputs, key: value}, config=_cfg())


def test_known_miscompile_is_refused() -> None:
    """The launcher refuses an explicit config known to compute wrong results: v4 at BLOCK_T 16 with
    num_stages 3 (measured on the H200); the space refuses it too. Pruned-only configs still run."""
    inputs = _inputs(8, H=2, topk=20, layout="v4")
    with pytest.raises(ValueError, match="config: BLOCK_T 16 with num_stages 3 miscompiles"):
        sparse_decode(**inputs, config=_cfg(16, 16, 1, 4, 3))
    v4 = SparseDecodeProblem(B=2, S_q=1, H=2, topk=20, layout="v4", page_size=16)
    assert "miscompiles" in KERNEL.space.check(_cfg(16, 16, 1, 4, 3), v4)
    _check(inputs, _cfg(16, 16, 64, 4, 1))  # more splits than tiles: outside the space, still correct
    v32 = SparseDecodeProblem(B=8, S_q=1, H=2, topk=20, layout="v32", page_size=64)
    assert KERNEL.space.check(_cfg(16, 16, 1, 4, 3), v32) is None


def test_space_baselines_constraints_and_launches() -> None:
    space = KERNEL.space
    assert len(space.baseline("sglang_sm120")) == 4 and all(c["NUM_SPLITS"] == 1 for c in space.baseline("sglang_sm120"))
    problem = SparseDecodeProblem(B=1, S_q=1, H=8, topk=512, layout="v4", page_size=256, extra_topk=128)
    assert space.check(_cfg(h_tile=32), problem) and space.check(_cfg(block_t=64, splits=64), problem)
    assert space.check(space.default, problem) is None
    [decode, combine] = launches(problem, _cfg(splits=4))
    assert decode.kwargs["HP"] == 16 and combine.kwargs["NUM_SPLITS"] == 4
    cost = KERNEL.cost(problem)
    assert cost.bytes > 640 * 584 and cost.flops == 2 * 8 * 640 * 1024


_COMPILE = """
from aotune.tuner.feasibility import compile_candidate
p = dict(B=1, S_q=1, H=128, topk=2048, layout="v32", page_size=64)
cfg = lambda bt, ht, w, st: dict(BLOCK_T=bt, H_TILE=ht, NUM_SPLITS=4, num_warps=w, num_stages=st)
big = compile_candidate("flash_mla", p, cfg(32, 64, 8, 2), "sm_120")
small = compile_candidate("flash_mla", p, cfg(16, 16, 4, 1), "sm_120")
print(big.status, big.shared_bytes, small.status, small.shared_bytes)
"""


def test_sm120_drops_large_tiles_by_real_compilation() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the AOT compiler needs real JIT fns
    text = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, check=True,
                          timeout=300).stdout.split()
    assert text[0] == "out_of_resources" and int(text[1]) > 101376, text
    assert text[2] == "ok" and 0 < int(text[3]) <= 101376, text


GPU_CASES = [
    ("v32_tp8", dict(B=4, S_q=2, H=16, topk=2048, layout="v32", page_size=64, has_topk_length=True)),
    ("v32_tp1", dict(B=2, S_q=1, H=128, topk=2048, layout="v32", page_size=64)),
    ("v4_tp8", dict(B=4, S_q=1, H=8, topk=512, layout="v4", page_size=256, extra_topk=128, has_sink=True,
                    has_topk_length=True)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("name,fields", GPU_CASES, ids=[c[0] for c in GPU_CASES])
@pytest.mark.parametrize("config", [_cfg(32, 16, 1, 8, 2), _cfg(32, 16, 8, 4, 2), _cfg(16, 8, 1, 8, 2),
                                    _cfg(64, 32, 16, 8, 1), _cfg(16, 16, 4, 4, 3), _cfg(32, 16, 1, 8, 3)])
def test_gpu_real_shapes(name: str, fields: dict, config: dict) -> None:
    inputs = KERNEL.make_inputs(SparseDecodeProblem(**fields), 11, "cuda")
    if fields["layout"] == "v4" and config["BLOCK_T"] == 16 and config["num_stages"] == 3:
        # Measured wrong on the H200 (BENCHMARKS.md): the space and the launcher refuse it.
        with pytest.raises(ValueError, match="miscompiles"):
            sparse_decode(**inputs, config=config)
        return
    _check(inputs, config)


@pytest.mark.gpu
@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("name,fields", [GPU_CASES[0], GPU_CASES[2]], ids=["v32_tp8", "v4_tp8"])
def test_gpu_extreme_magnitudes(name: str, fields: dict, tiny: bool) -> None:
    inputs = _extreme(KERNEL.make_inputs(SparseDecodeProblem(**fields), 12, "cuda"), tiny)
    _check(inputs, _cfg(32, 16, 4, 4, 1))


def _mma(block_t: int = 16, splits: int = 1, h_tile: int = 16, combine: str = "launch", stages: int = 1) -> dict:
    """An mma-path config: 16 head rows (``_mla_mma``) or, with ``h_tile`` 8, heads as the MMA's N (``_mla_mma8``);
    ``combine`` "fused": the last split program of each row merges the partials (no combine launch); ``stages``
    3 (H_TILE 8): the gathers through the shared-memory ring (``_mla_mma8._ring_loop``)."""
    return dict(_cfg(block_t, h_tile, splits, 4, stages), PATH="mma", COMBINE=combine)


def test_mma_path_needs_a_gpu_and_its_tiles() -> None:
    """The Gluon path refuses the interpreter (it cannot run there) and configs outside its tiles."""
    inputs = _inputs(1)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            sparse_decode(**inputs, config=_mma())
    with pytest.raises(ValueError, match="mma path: H_TILE 8 or 16"):
        sparse_decode(**inputs, config=dict(_mma(), num_warps=8))
    with pytest.raises(ValueError, match="mma path: H_TILE 8 or 16"):
        sparse_decode(**inputs, config=_mma(h_tile=4))
    problem = SparseDecodeProblem(B=1, S_q=1, H=16, topk=2048, layout="v32", page_size=64)
    mma = [c.config for c in KERNEL.space.candidates(problem) if c.config["PATH"] == "mma" and c.invalid_reason is None]
    assert {(c["BLOCK_T"], c["H_TILE"], c["num_warps"], c["num_stages"]) for c in mma} == {
        (16, 16, 4, 1), (32, 16, 4, 1), (16, 8, 4, 1), (32, 8, 4, 1), (16, 8, 4, 3), (32, 8, 4, 3)}
    # 6 tilings (H_TILE 8 with and without the ring) x 7 split counts, each with PDL 0 and (6 of the 7 split
    # counts) PDL 1 or COMBINE "fused"
    assert len(mma) == 114
    with pytest.raises(ValueError, match="num_stages 1, or 3"):
        sparse_decode(**inputs, config=_mma(stages=3))  # the ring is the 8-head kernel's


def test_mma_path_launches_the_heads_as_n_kernel_at_h_tile_8() -> None:
    """H_TILE 8 on the mma path is ``_mla_mma8`` (8 heads per program, ceil(H / 8) head tiles); 16 ``_mla_mma``."""
    problem = SparseDecodeProblem(B=2, S_q=1, H=20, topk=64, layout="v4", page_size=64)
    eight, sixteen = launches(problem, _mma(16, 1, 8))[0], launches(problem, _mma(16, 1, 16))[0]
    assert eight.fn.__name__ == "mla_decode_mma8_kernel" and sixteen.fn.__name__ == "mla_decode_mma_kernel"
    assert eight.kwargs["H_TILE"] == 8 and sixteen.kwargs["H_TILE"] == 16


def test_fused_combine_is_the_mma_paths_one_launch() -> None:
    """COMBINE "fused" (the last split program merges) exists on the mma path with splits and without PDL; its
    call is one launch, the decode kernel with FUSED and a ticket per (row, head tile)."""
    inputs = _inputs(1)
    for config, reason in [(dict(_cfg(splits=2), COMBINE="fused"), "needs PATH 'mma'"),
                           (_mma(splits=1, combine="fused"), "NUM_SPLITS > 1"),
                           (dict(_mma(splits=2, combine="fused"), PDL=1), "PDL 0"),
                           (_mma(splits=2, combine="merge"), "COMBINE is 'launch' or 'fused', not 'merge'")]:
        with pytest.raises(ValueError, match=reason):
            sparse_decode(**inputs, config=config)
    problem = SparseDecodeProblem(B=3, S_q=2, H=20, topk=512, layout="v4", page_size=256, extra_topk=128)
    triton_path = [c.config for c in KERNEL.space.candidates(problem) if c.config["PATH"] == "triton"]
    assert {c["COMBINE"] for c in triton_path} == {"launch"}
    for h_tile, head_tiles in [(8, 3), (16, 2)]:
        [decode] = launches(problem, _mma(32, 4, h_tile, "fused"))
        assert decode.kwargs["FUSED"] and decode.kwargs["NUM_SPLITS"] == 4
        tickets = decode.args[decode.fn.arg_names.index("ticket_ptr")]
        assert tickets.dtype == torch.int32 and tickets.numel() == 3 * 2 * head_tiles
        decode, combine = launches(problem, _mma(32, 4, h_tile))
        assert not decode.kwargs["FUSED"] and combine.fn.__name__ == "mla_combine_kernel"


_COMPILE_FUSED = """
from aotune.kernels import flash_mla
from aotune.tuner.arch import get_arch
from aotune.tuner.feasibility import compile_launch
p = flash_mla.SparseDecodeProblem(B=2, S_q=1, H=8, topk=512, layout="v4", page_size=256, extra_topk=128)
cfg = dict(PATH="mma", BLOCK_T=16, H_TILE=8, NUM_SPLITS=4, num_warps=4, num_stages=1, PDL=0, COMBINE="fused")
ptx = compile_launch(flash_mla.launches(p, cfg)[0], get_arch("sm_90")).asm["ptx"]
print("\\n".join(l.strip() for l in ptx.splitlines() if any(w in l for w in ("st.global", "bar.sync", "atom."))))
"""


def test_fused_combine_orders_partials_before_the_ticket() -> None:
    """The fused tail compiled for sm_90 (no GPU needed): the partial stores, then a CTA barrier, then one
    gpu-scope acq_rel add (release for the stores, acquire for the merge's loads), then the barrier that hands
    its value to every thread."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    lines = subprocess.run([sys.executable, "-c", _COMPILE_FUSED], env=env, capture_output=True, text=True,
                           check=True, timeout=300).stdout.splitlines()
    atoms = [i for i, line in enumerate(lines) if "atom." in line]
    assert len(atoms) == 1 and "atom.global.gpu.acq_rel.add" in lines[atoms[0]], lines
    before = lines[:atoms[0]]
    assert "bar.sync" in before[-1] and any("st.global.v4" in line for line in before), before[-4:]
    assert any("bar.sync" in line for line in lines[atoms[0]:]), lines[atoms[0]:]


@pytest.mark.parametrize("splits,launched", [(1, 1), (2, 2), (3, 3), (6, 6), (12, 10), (16, 14), (24, 20), (32, 20),
                                             (40, 40), (64, 40)])
def test_empty_splits_are_not_launched(splits: int, launched: int) -> None:
    """V4-Flash TP 8's 40 tiles of 16 tokens: each split takes ceil(40 / NUM_SPLITS) tiles, and only the splits
    that get one are launched (decode grid, partials and combine)."""
    problem = SparseDecodeProblem(B=2, S_q=1, H=8, topk=512, layout="v4", page_size=256, extra_topk=128)
    config = _cfg(16, 16, splits)
    decode, *combine = launches(problem, config)
    assert decode.kwargs["NUM_SPLITS"] == launched and config["NUM_SPLITS"] == splits
    assert [c.kwargs["NUM_SPLITS"] for c in combine] == ([launched] if launched > 1 else [])
    if launched > 1:
        assert decode.args[-5].numel() == 2 * launched * 8 * 512  # the fp32 partial outputs
        cols = combine[0].kwargs["CB"]
        assert cols & (cols - 1) == 0 and launched * cols <= 64 * 128  # tl.arange's power of two; 64 floats a thread


MMA_GPU_CASES = GPU_CASES + [
    ("v4_odd_heads", dict(B=3, S_q=2, H=20, topk=200, layout="v4", page_size=64, extra_topk=37, has_sink=True,
                          has_topk_length=True)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("name,fields", MMA_GPU_CASES, ids=[c[0] for c in MMA_GPU_CASES])
@pytest.mark.parametrize("config", [_mma(16, 1), _mma(32, 1), _mma(16, 8), _mma(32, 4), _mma(16, 6), _mma(16, 24),
                                    _mma(16, 1, 8), _mma(32, 1, 8), _mma(16, 8, 8), _mma(32, 4, 8), _mma(16, 24, 8),
                                    _mma(16, 8, 16, "fused"), _mma(32, 3, 16, "fused"), _mma(16, 24, 16, "fused"),
                                    _mma(16, 8, 8, "fused"), _mma(32, 4, 8, "fused"), _mma(16, 24, 8, "fused"),
                                    _mma(16, 1, 8, stages=3), _mma(32, 1, 8, stages=3), _mma(16, 8, 8, stages=3),
                                    _mma(32, 4, 8, stages=3), _mma(16, 24, 8, stages=3), _mma(32, 3, 8, "fused", 3)],
                         ids=["bt16", "bt32", "bt16_split8", "bt32_split4", "bt16_split6", "bt16_split24", "h8_bt16",
                              "h8_bt32", "h8_bt16_split8", "h8_bt32_split4", "h8_bt16_split24", "fused_bt16_split8",
                              "fused_bt32_split3", "fused_bt16_split24", "fused_h8_bt16_split8",
                              "fused_h8_bt32_split4", "fused_h8_bt16_split24", "ring_bt16", "ring_bt32",
                              "ring_bt16_split8", "ring_bt32_split4", "ring_bt16_split24", "ring_fused_bt32_split3"])
def test_gpu_mma_path(name: str, fields: dict, config: dict) -> None:
    _check(KERNEL.make_inputs(SparseDecodeProblem(**fields), 13, "cuda"), config)


@pytest.mark.gpu
@pytest.mark.parametrize("h_tile,stages", [(16, 1), (8, 1), (8, 3)], ids=["h16", "h8", "h8_ring"])
@pytest.mark.parametrize("block_t", [16, 32])  # q in registers / read back from shared memory (H_TILE 16)
@pytest.mark.parametrize("tiny", [False, True])
@pytest.mark.parametrize("name,fields", [GPU_CASES[0], GPU_CASES[2]], ids=["v32_tp8", "v4_tp8"])
def test_gpu_mma_path_extreme_magnitudes(name: str, fields: dict, tiny: bool, block_t: int, h_tile: int,
                                         stages: int) -> None:
    """fp16 q rows (power-of-two row factors) and fp16 PV weights (running reference per head, raised
    against each tile's largest scale) under huge and tiny q rows and KV scales."""
    _check(_extreme(KERNEL.make_inputs(SparseDecodeProblem(**fields), 12, "cuda"), tiny),
           _mma(block_t, 4, h_tile, stages=stages))


@pytest.mark.gpu
@pytest.mark.parametrize("h_tile,stages", [(16, 1), (8, 1), (8, 3)], ids=["h16", "h8", "h8_ring"])
@pytest.mark.parametrize("lonely", ["-inf", "+inf"])
@pytest.mark.parametrize("splits,combine", [(1, "launch"), (2, "launch"), (2, "fused")])
def test_gpu_mma_path_lonely_rows_and_masked_tiles(lonely: str, splits: int, combine: str, h_tile: int,
                                                    stages: int) -> None:
    inputs = KERNEL.make_inputs(SparseDecodeProblem(B=3, S_q=1, H=2, topk=48, layout="v4", page_size=16,
                                                    extra_topk=16, has_sink=True, has_topk_length=True), 3, "cuda")
    inputs["indices"][0] = -1
    inputs["extra_indices"][0, :, ::2] = -1
    inputs["indices"][1, :, :32] = -1
    inputs["topk_length"][2], inputs["extra_topk_length"][2] = 0, 0
    out, lse = sparse_decode(**inputs, lonely_lse=lonely, config=_mma(16, splits, h_tile, combine, stages))
    ref_out, ref_lse = sparse_decode_ref(**inputs, lonely_lse=lonely)
    assert torch.all(out[2] == 0) and torch.all(lse[2] == float(lonely))
    assert rel_error(out, ref_out) <= 1e-2 and rel_error(lse, ref_lse) <= 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("config", [_mma(16, 1), _mma(32, 1), _mma(16, 4), _mma(16, 1, 8), _mma(32, 4, 8),
                                    _mma(16, 1, 8, stages=3), _mma(32, 4, 8, stages=3)],
                         ids=["bt16", "bt32", "bt16_split4", "h8_bt16", "h8_bt32_split4", "ring_bt16",
                              "ring_bt32_split4"])
@pytest.mark.parametrize("name,fields", [GPU_CASES[0], GPU_CASES[2]], ids=["v32_tp8", "v4_tp8"])
def test_gpu_mma_path_zero_tokens_and_ids_past_the_cache(name: str, fields: dict, config: dict) -> None:
    """Tokens whose values are all zero (v32: scale 0, so a tile's largest scale can be 0 and the PV
    reference stays 0) lead every row, and ids past either end of the cache (negative, n_tok, 2^31 - 1) are
    skipped like -1."""
    inputs = KERNEL.make_inputs(SparseDecodeProblem(**fields), 14, "cuda")
    page = fields["page_size"]
    pack, unpack = (pack_kv_v32, unpack_kv_v32) if fields["layout"] == "v32" else (pack_kv_v4, unpack_kv_v4)
    kv = unpack(inputs["kv_cache"], page)
    n_tok = kv.shape[0]
    kv[:64] = 0  # tokens 0-63 are zero vectors
    inputs["kv_cache"] = pack(kv, page)
    idx = inputs["indices"]
    idx[:, :, :40] = torch.arange(40, device=idx.device)  # the first tiles read only zero tokens
    idx[:, :, 40:44] = torch.tensor([n_tok, n_tok + 100, -5, 2**31 - 1], device=idx.device, dtype=idx.dtype)
    _check(inputs, config)


def _tickets_are_zero() -> bool:
    torch.cuda.synchronize()
    return all(int(buf.count_nonzero()) == 0 for bufs in flash_mla._TICKETS.values() for buf in bufs)


@pytest.mark.gpu
@pytest.mark.parametrize("name,fields,h_tile", [(*GPU_CASES[0], 16), (*MMA_GPU_CASES[3], 8)],
                         ids=["v32_tp8", "v4_odd_heads"])
def test_gpu_fused_combine_tickets_graphs_and_streams(name: str, fields: dict, h_tile: int) -> None:
    """COMBINE "fused" against the combine kernel (the same merge: equal to fp32 rounding), its tickets back at 0
    after every call, CUDA-graph replays on new q (captured on a stream that never ran it eagerly), and calls
    on two streams at once (each stream its own tickets)."""
    config = _mma(16, 8, h_tile, "fused")  # v4_odd_heads: 3 head tiles of 8, 2 query rows per request
    inputs = KERNEL.make_inputs(SparseDecodeProblem(**fields), 15, "cuda")
    launched = sparse_decode(**inputs, config=dict(config, COMBINE="launch"))
    for _ in range(3):
        fused = sparse_decode(**inputs, config=config)
        assert rel_error(fused[0], launched[0]) <= 1e-4 and rel_error(fused[1], launched[1]) <= 1e-6
        assert _tickets_are_zero()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        captured = sparse_decode(**inputs, config=config)
    for seed in range(3):
        inputs["q"].copy_(torch.randn(inputs["q"].shape, generator=torch.Generator("cuda").manual_seed(seed),
                                      device="cuda"))
        graph.replay()
        ref = sparse_decode_ref(**inputs)
        assert rel_error(captured[0], ref[0]) <= 1e-2 and rel_error(captured[1], ref[1]) <= 1e-3
        assert _tickets_are_zero()
    sets = [KERNEL.make_inputs(SparseDecodeProblem(**fields), 20 + i, "cuda") for i in range(2)]
    streams = [torch.cuda.Stream() for _ in sets]
    outs: list[list] = [[], []]
    for _ in range(8):  # both streams' calls interleaved on the GPU
        for i, (s, inp) in enumerate(zip(streams, sets)):
            with torch.cuda.stream(s):
                outs[i].append(sparse_decode(**inp, config=config))
    torch.cuda.synchronize()
    for i, inp in enumerate(sets):
        ref = sparse_decode_ref(**inp)
        for out, lse in outs[i]:
            assert rel_error(out, ref[0]) <= 1e-2 and rel_error(lse, ref[1]) <= 1e-3
    assert _tickets_are_zero()


def test_fused_tickets_are_made_by_an_eager_call() -> None:
    """A capture cannot zero a ticket buffer before its graph runs: it uses the device's graph buffer, made by
    eager calls, and names the problem when there is none large enough (no GPU needed: capture is faked)."""
    device = torch.device("cuda", 0)
    saved = dict(flash_mla._TICKETS)
    flash_mla._TICKETS.clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
            with pytest.raises(RuntimeError, match="COMBINE 'fused' needs 100 tickets .* has 0: make one call"):
                flash_mla._tickets(device, 100)
            graphs = torch.zeros(200, dtype=torch.int32)
            flash_mla._TICKETS[(str(device), "graphs")] = [graphs]
            assert flash_mla._tickets(device, 150) is graphs
            with pytest.raises(RuntimeError, match="needs 300 tickets .* has 200"):
                flash_mla._tickets(device, 300)
    finally:
        flash_mla._TICKETS.clear()
        flash_mla._TICKETS.update(saved)


H200 = DeviceClass("nvidia", "sm_90", "h200", 232448, 132)


@pytest.mark.parametrize("device,mma", [(H200, True), (dataclasses.replace(H200, arch="sm_120", sm_count=188), True),
                                        (dataclasses.replace(H200, arch="sm_89"), True),
                                        (dataclasses.replace(H200, arch="sm_86"), False),
                                        (dataclasses.replace(H200, arch="sm_80"), False),
                                        (dataclasses.replace(H200, arch="sm_75"), False),
                                        (dataclasses.replace(H200, vendor="amd", arch="gfx942"), False),
                                        (runtime.INTERPRETER, False)])
def test_runtime_default_is_the_mma_path_on_nvidia_sm89_and_later(device: DeviceClass, mma: bool) -> None:
    """The measured rule (``_mla_space.runtime_default``): on sm_89+ (sm_80 and sm_86 lack the fp8 conversions
    the mma path compiles to) the mma path at BLOCK_T 16 (at most 8
    heads: H_TILE 8, BLOCK_T 32) with the power-of-two split count nearest to two programs per SM (at most 64
    and at most the tiles), its combine chained with PDL (sm_90+); else the space default."""
    v32_tp8 = dict(S_q=1, H=16, topk=2048, layout="v32", page_size=64)
    v4_tp8 = dict(S_q=1, H=8, topk=512, layout="v4", page_size=256, extra_topk=128, has_sink=True)
    v32_tp1 = dict(v32_tp8, H=128)
    # (model, B): split count with 132 SMs (H200) / with 188 (an SM120 part). V4-Flash (8 heads: H_TILE 8,
    # BLOCK_T 32) has 20 tiles of 32 tokens (512 + 128), so at most 16 splits.
    expected = {(0, 1): (64, 64), (0, 4): (64, 64), (0, 8): (32, 64), (0, 64): (4, 8), (0, 256): (1, 2),
                (1, 1): (16, 16), (1, 8): (16, 16), (1, 64): (4, 8), (1, 256): (1, 2), (2, 1): (32, 64),
                (2, 8): (4, 8), (2, 64): (1, 1)}
    for (which, batch), by_sms in expected.items():
        problem = SparseDecodeProblem(B=batch, **(v32_tp8, v4_tp8, v32_tp1)[which])
        default = KERNEL.runtime_default(problem, device)
        splits = by_sms[device.sm_count != H200.sm_count]
        if not mma:
            assert default is None, (which, batch)
        else:
            chained = dict(PDL=1) if splits > 1 and device.arch != "sm_89" else {}  # sm_90+: the combine is chained
            tile = dict(BLOCK_T=32, H_TILE=8) if which == 1 else dict(BLOCK_T=16, H_TILE=16)
            assert default == dict(PATH="mma", **tile, NUM_SPLITS=splits, num_warps=4, num_stages=1,
                                   **chained), (which, batch, default)
            assert KERNEL.space.check(default, problem) is None
        assert runtime.default_configs(KERNEL, problem, device)[0] == (default or KERNEL.space.default)


@triton.jit
def _unpack_bytes(w_ptr, out_ptr, N: tl.constexpr):
    w = tl.load(w_ptr + tl.arange(0, N))
    for i in tl.static_range(4):
        tl.store(out_ptr + i * N + tl.arange(0, N), _fp8_byte(w, 8 * i))


def test_fp8_bytes_by_integer_ops_are_exact() -> None:
    """The Triton path's fp8 unpacking without the sm_89 conversion (the interpreter, sm_80 / sm_86) gives
    every e4m3fn byte's value, subnormals and signed zeros included (NaN bytes excepted: no quantizer writes them)."""
    values = torch.arange(256, dtype=torch.uint8)
    values = values[(values & 0x7F) != 0x7F]
    words = torch.cat([values, values[:2]]).view(torch.int32).to(DEVICE)  # 254 + 2 = 256 bytes
    out = torch.empty(4, 64, dtype=torch.float16, device=DEVICE)
    _unpack_bytes[(1,)](words, out, N=64)
    raw = words.view(torch.uint8).view(64, 4)
    expected = torch.stack([raw[:, i].view(torch.float8_e4m3fn).to(torch.float16) for i in range(4)])
    assert torch.equal(out, expected) and torch.equal(out.signbit(), expected.signbit())


_COMPILE_DEFAULT = """
import sys
from aotune.cache_db.identity import DeviceClass
from aotune.kernels._mla_kernels import _fp8_byte
from aotune.kernels.flash_mla import KERNEL, SparseDecodeProblem
from aotune.tuner.arch import get_arch
from aotune.tuner.feasibility import compile_launch
arch = sys.argv[1]
device = DeviceClass("nvidia", arch, "gpu", get_arch(arch).smem_per_block, 108)
problem = SparseDecodeProblem(B=8, S_q=1, H=16, topk=2048, layout="v32", page_size=64)
config = KERNEL.runtime_default(problem, device) or KERNEL.space.default
for launch in KERNEL.launches(problem, config):
    compile_launch(launch, get_arch(arch))  # with the target's constexprs (Launch.arch_kwargs: ASM from sm_89)
print(config.get("PATH", "triton"))
"""


@pytest.mark.parametrize("arch,path", [("sm_80", "triton"), ("sm_86", "triton"), ("sm_89", "mma")])
def test_runtime_default_compiles_for_the_arch_it_is_chosen_for(arch: str, path: str) -> None:
    """The untuned default of each NVIDIA arch compiles there, ahead of time as bundles do (ptxas, no GPU
    needed): the fp8 conversions (``cvt.rn.f16x2.e4m3x2``) need sm_89, so A100 (sm_80) and sm_86 parts run
    the Triton path with its fp8 bytes unpacked by integer ops (``flash_mla._fp8_asm``, ``Launch.arch_kwargs``)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _COMPILE_DEFAULT, arch], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [path]


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("name,fields", [GPU_CASES[0], GPU_CASES[2]], ids=["v32_tp8", "v4_tp8"])
def test_gpu_runtime_default_without_a_bundle_is_the_mma_path(name: str, fields: dict, batch: int) -> None:
    """With no bundle (an empty loader) ``config=None`` resolves to the mma default on an sm_80+ GPU (at B = 1
    with 32 or 64 splits) and matches the reference."""
    problem = SparseDecodeProblem(**dict(fields, B=batch))
    inputs = KERNEL.make_inputs(problem, 14, "cuda")
    loader.configure([], defaults=False)
    runtime._MEMO.clear()
    try:
        assert runtime.resolve_config(KERNEL, problem, inputs["q"].device)["PATH"] == "mma"
        out, lse = sparse_decode(**inputs)
        ref_out, ref_lse = sparse_decode_ref(**inputs)
        assert rel_error(out, ref_out) <= 1e-2 and rel_error(lse, ref_lse) <= 1e-3
    finally:
        loader.configure()
        runtime._MEMO.clear()


def test_floor_benchmark_gathers_exactly_the_bytes_the_kernel_reads() -> None:
    """``tests/bench/bench_mla_floor.py`` (the floor the issue's goals are judged against) reads the kernel's
    bytes: its gather's words against a torch gather of the same rows, scales and ids, both layouts."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "tests/bench/bench_mla_floor.py", "--check"], env=env,
                            capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("checked against torch") == 2
