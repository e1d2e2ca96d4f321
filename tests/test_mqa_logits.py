"""MQA indexer logits: Triton kernel vs the PyTorch reference, the reference vs a direct loop of the formula."""
from __future__ import annotations

import math

import pytest
import torch

from aotune.kernels import get_kernel, rel_error
from aotune.kernels import mqa_logits as mq
from aotune.kernels.formats.index_kv import pack_index_kv, unpack_index_kv

TOL = 1e-2
GARBAGE_PAGE = 1 << 30  # block-table entries past every context: must never be dereferenced


def cfg(**over: object) -> dict:
    return {**mq.SPACE.default, "BLOCK_N": 16, "BLOCK_H": 16, "TILES_PER_PROG": 2, **over}


def paged_inputs(B: int, N: int, H: int, D: int, ps: int, lens: list, max_len: int, seed: int,
                 device: str = "cpu", scale_q: float = 1.0) -> dict:
    """Random paged inputs with permuted pages; ``lens`` is [B] (causal) or [B][N] (per draft)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = -(-max_len // ps) + 1
    table = torch.randperm(B * blocks, generator=gen).to(torch.int32).view(B, blocks)
    ctx = torch.tensor(lens, dtype=torch.int32)
    for b in range(B):
        end = int(ctx[b].max())
        table[b, -(-end // ps):] = GARBAGE_PAGE
    return {"q": (torch.randn(B, N, H, D, generator=gen) * scale_q).to(torch.float8_e4m3fn).to(device),
            "kv_cache": pack_index_kv(torch.randn(B * blocks * ps, D, generator=gen), ps).to(device),
            "weights": torch.randn(B * N, H, generator=gen).to(device), "context_lens": ctx.to(device),
            "block_table": table.to(device), "max_context_len": max_len, "page_size": ps}


def window_inputs(S_q: int, S_kv: int, H: int, D: int, seed: int, device: str = "cpu") -> dict:
    gen = torch.Generator().manual_seed(seed)
    kv = torch.randn(S_kv, D, generator=gen)
    scale = kv.abs().amax(dim=1) / 448.0
    ks = torch.randint(-3, S_kv, (S_q,), generator=gen, dtype=torch.int32)
    ke = (ks + torch.randint(-2, S_kv, (S_q,), generator=gen, dtype=torch.int32)).clamp_max(S_kv + 5)
    return {"q": torch.randn(S_q, H, D, generator=gen).to(torch.float8_e4m3fn).to(device),
            "kv": (kv / scale[:, None]).to(torch.float8_e4m3fn).to(device), "kv_scale": scale.to(device),
            "weights": torch.randn(S_q, H, generator=gen).to(device), "ks": ks.to(device), "ke": ke.to(device)}


def direct_paged(inp: dict, relu: bool) -> torch.Tensor:
    """The KERNELS.md formula as nested loops in float64."""
    q = inp["q"].float().double()
    B, N, H, D = q.shape
    ps, T, ctx = inp["page_size"], inp["max_context_len"], inp["context_lens"]
    keys = unpack_index_kv(inp["kv_cache"], ps).double()
    out = torch.full((B * N, T), -math.inf, dtype=torch.float64)
    for b in range(B):
        for j in range(N):
            for t in range(T):
                ok = t <= int(ctx[b]) - N + j if ctx.dim() == 1 else t < int(ctx[b, j])
                if ok:
                    k = keys[int(inp["block_table"][b, t // ps]) * ps + t % ps]
                    out[b * N + j, t] = sum(float(inp["weights"][b * N + j, h]) *
                                            (max(float(q[b, j, h] @ k), 0.0) if relu else float(q[b, j, h] @ k))
                                            for h in range(H))
    return out


def test_reference_matches_direct_loop() -> None:
    inp = paged_inputs(2, 2, 3, 16, 4, [7, 1], 9, seed=3)
    for act in ("relu", "none"):
        assert rel_error(mq.paged_mqa_logits_ref(**inp, activation=act), direct_paged(inp, act == "relu")) < 1e-6
    inp = paged_inputs(2, 2, 3, 16, 4, [[3, 8], [0, 5]], 8, seed=4)
    assert rel_error(mq.paged_mqa_logits_ref(**inp), direct_paged(inp, True)) < 1e-6
    win = window_inputs(5, 11, 3, 16, seed=5)
    ref = mq.mqa_logits_ref(**win)
    keys = win["kv"].float().double() * win["kv_scale"].double()[:, None]
    for i in range(5):
        for t in range(11):
            s = win["q"][i].float().double() @ keys[t]
            want = float((win["weights"][i].double() * s.clamp_min(0)).sum())
            assert ref[i, t].item() == (pytest.approx(want, rel=1e-5, abs=1e-6)
                                        if int(win["ks"][i]) <= t < int(win["ke"][i]) else -math.inf)


@pytest.mark.parametrize("dot", ["fp8", "upcast"])
@pytest.mark.parametrize("B,N,H,D,ps,lens,max_len,over", [
    (3, 1, 16, 32, 16, [37, 1, 64], 70, {}),                       # ragged, ctx 1, columns past every ctx
    (2, 2, 24, 32, 8, [45, 2], 45, {"BLOCK_H": 16}),               # causal drafts, heads not a power of two
    (2, 3, 16, 16, 32, [50, 3], 52, {"BLOCK_N": 16}),               # N=3 (padded rows), BLOCK_N < page
    (2, 2, 32, 32, 8, [33, 20], 40, {"BLOCK_N": 32, "BLOCK_H": 16}),  # BLOCK_N > page, head blocks
])
def test_paged_causal(dot: str, B: int, N: int, H: int, D: int, ps: int, lens: list, max_len: int,
                      over: dict) -> None:
    inp = paged_inputs(B, N, H, D, ps, lens, max_len, seed=B + N + H)
    out = mq.paged_mqa_logits(**inp, config=cfg(DOT=dot, **over))
    ref = mq.paged_mqa_logits_ref(**inp)
    assert out.shape == (B * N, max_len) and rel_error(out, ref) <= TOL


@pytest.mark.parametrize("dot", ["fp8", "upcast"])
def test_paged_per_draft_lens(dot: str) -> None:
    inp = paged_inputs(3, 2, 16, 32, 16, [[10, 40], [0, 0], [33, 17]], 41, seed=7)
    out = mq.paged_mqa_logits(**inp, config=cfg(DOT=dot))
    ref = mq.paged_mqa_logits_ref(**inp)
    assert rel_error(out, ref) <= TOL
    assert torch.isinf(out[2:4]).all() and torch.isfinite(out[1, :40]).all() and out[1, 40] == -math.inf


def test_causal_context_shorter_than_drafts() -> None:
    inp = paged_inputs(2, 3, 16, 16, 8, [1, 0], 12, seed=8)
    out = mq.paged_mqa_logits(**inp, config=cfg())
    assert rel_error(out, mq.paged_mqa_logits_ref(**inp)) <= TOL
    assert torch.isinf(out[:2]).all() and torch.isfinite(out[2, :1]).all() and torch.isinf(out[3:]).all()


@pytest.mark.parametrize("dot", ["fp8", "upcast"])
def test_window(dot: str) -> None:
    win = window_inputs(9, 50, 16, 32, seed=9)
    out = mq.mqa_logits(**win, config=cfg(DOT=dot))
    assert out.shape == (9, 50) and rel_error(out, mq.mqa_logits_ref(**win)) <= TOL


def test_relu_and_none_differ_where_qk_negative() -> None:
    inp = paged_inputs(2, 2, 16, 32, 16, [30, 25], 30, seed=10)
    relu = mq.paged_mqa_logits(**inp, config=cfg())
    none = mq.paged_mqa_logits(**inp, activation="none", config=cfg())
    assert rel_error(relu, mq.paged_mqa_logits_ref(**inp)) <= TOL
    none_ref = mq.paged_mqa_logits_ref(**inp, activation="none")
    assert rel_error(none, none_ref) <= TOL
    finite = torch.isfinite(relu)
    assert (relu[finite] - none[finite]).abs().max() > 0.1 * none_ref[finite].abs().max()
    # without the ReLU, the w-q precompute (sum_h w_h q_h, then one dot per token) is the same function
    keys = unpack_index_kv(inp["kv_cache"], 16)
    wq = torch.einsum("rh,rhd->rd", inp["weights"][:2], inp["q"][0].float())
    pages = inp["block_table"][0, :2].long()
    k0 = keys.view(-1, 16, 32)[pages].reshape(-1, 32)[:29]
    assert torch.allclose(none_ref[:2, :29][1], (wq @ k0.T)[1], rtol=1e-4, atol=1e-4)


def test_config_none_uses_default_and_fp8_input_dtypes() -> None:
    inp = paged_inputs(1, 1, 16, 32, 16, [20], 20, seed=11)
    inp["q"] = inp["q"].view(torch.uint8)
    assert rel_error(mq.paged_mqa_logits(**inp), mq.paged_mqa_logits_ref(**inp)) <= TOL


@pytest.mark.parametrize("field,value,name", [
    ("q", torch.zeros(1, 1, 16, 32), "q"),
    ("kv_cache", torch.zeros(2, 16 * 35, dtype=torch.uint8), "kv_cache"),
    ("weights", torch.zeros(1, 8), "weights"),
    ("context_lens", torch.zeros(1, dtype=torch.int64), "context_lens"),
    ("context_lens", torch.zeros(1, 3, dtype=torch.int32), "context_lens"),
    ("block_table", torch.zeros(1, 2, dtype=torch.int64), "block_table"),
    ("block_table", torch.zeros(2, 2, dtype=torch.int32), "block_table"),
    ("max_context_len", -1, "max_context_len"),
    ("page_size", 8, "kv_cache"),
    ("activation", "gelu", "activation"),
])
def test_paged_validation_names_argument(field: str, value: object, name: str) -> None:
    inp = paged_inputs(1, 1, 16, 32, 16, [20], 20, seed=12)
    inp[field] = value
    for fn in (mq.paged_mqa_logits, mq.paged_mqa_logits_ref):
        with pytest.raises(ValueError, match=f"^{name}"):
            fn(**inp)


def test_window_validation_names_argument() -> None:
    win = window_inputs(3, 10, 16, 32, seed=13)
    for field, value in (("kv", win["kv"][:, :16].contiguous()), ("kv_scale", win["kv_scale"][:5]),
                         ("ks", win["ks"][:2]), ("ke", win["ke"].long()), ("weights", win["weights"].T)):
        with pytest.raises(ValueError, match=f"^{field}"):
            mq.mqa_logits(**{**win, field: value})


def test_space_kernel_and_launches_agree_with_launcher() -> None:
    kernel = get_kernel("mqa_logits")
    assert kernel is mq.KERNEL
    problem = kernel.problem({"B": 2, "N": 2, "H": 64, "D": 128, "context": 8192, "page_size": 64})
    assert problem.key == "B=2,N=2,H=64,D=128,context=8192,page_size=64,ctx_form=causal"
    cands = kernel.space.candidates(problem)
    assert cands[0].config == kernel.space.default and cands[0].invalid_reason is None
    assert any(c.invalid_reason and "registers" in c.invalid_reason for c in cands)
    config = cfg(DOT="upcast")
    for form in ("causal", "per_draft", "window"):
        prob = mq.MqaLogitsProblem(2, 1 if form == "window" else 2, 16, 32, 40, 16, form)
        inp = kernel.make_inputs(prob, 0, "cpu")
        assert rel_error(kernel.run(inp, config), kernel.reference(inp)) <= TOL
        meta = mq.launches(prob, config)[0]
        real = (mq._window_launch(inp["q"].view(torch.uint8), inp["kv"].view(torch.uint8), inp["kv_scale"],
                                  inp["weights"], inp["ks"], inp["ke"], torch.empty(2, 40), True, False, config)
                if form == "window" else
                mq._paged_launch(inp["q"].view(torch.uint8), inp["kv_cache"], inp["weights"], inp["context_lens"],
                                 inp["block_table"], torch.empty(4, 40), 16, True, False, config))[0]
        assert meta.kwargs == real.kwargs
        assert [(a.shape, a.dtype, a.stride()) if isinstance(a, torch.Tensor) else a for a in meta.args] == \
            [(a.shape, a.dtype, a.stride()) if isinstance(a, torch.Tensor) else a for a in real.args]
    assert kernel.cost(problem).bytes > 2 * 8192 * 132


def test_aot_compile_fp8_needs_sm89() -> None:
    from aotune.tuner.feasibility import compile_candidate

    problem = {"B": 2, "N": 2, "H": 64, "D": 128, "context": 8192}
    assert compile_candidate("mqa_logits", problem, mq.SPACE.default, "sm_90").status == "ok"
    assert compile_candidate("mqa_logits", problem, mq.SPACE.default, "sm_80").status == "compile_error"


@pytest.mark.gpu
@pytest.mark.parametrize("dot", ["fp8", "upcast"])
@pytest.mark.parametrize("N", [1, 2])
def test_gpu_real_shapes(dot: str, N: int) -> None:
    lens = [8192, 5000, 8190, 77]
    inp = paged_inputs(4, N, 64, 128, 64, lens, 8192, seed=20 + N, device="cuda")
    for config in (dict(mq.SPACE.default, DOT=dot), dict(mq.SPACE.default, DOT=dot, BLOCK_N=128, BLOCK_H=32,
                                                         TILES_PER_PROG=8, num_warps=8, num_stages=3)):
        out = mq.paged_mqa_logits(**inp, config=config)
        assert rel_error(out, mq.paged_mqa_logits_ref(**inp)) <= TOL
    per_draft = dict(inp, context_lens=torch.tensor([[8000, 8192], [1, 2], [4000, 300], [0, 9]][:4],
                                                    dtype=torch.int32, device="cuda")[:, :N].contiguous())
    assert rel_error(mq.paged_mqa_logits(**per_draft, config=dict(mq.SPACE.default, DOT=dot)),
                     mq.paged_mqa_logits_ref(**per_draft)) <= TOL


@pytest.mark.gpu
def test_gpu_window_and_cuda_graph() -> None:
    win = window_inputs(64, 4096, 64, 128, seed=30, device="cuda")
    assert rel_error(mq.mqa_logits(**win), mq.mqa_logits_ref(**win)) <= TOL
    inp = paged_inputs(4, 2, 64, 128, 64, [8192, 100, 4000, 8000], 8192, seed=31, device="cuda")
    mq.paged_mqa_logits(**inp)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = mq.paged_mqa_logits(**inp)
    graph.replay()
    torch.cuda.synchronize()
    assert rel_error(out, mq.paged_mqa_logits_ref(**inp)) <= TOL
