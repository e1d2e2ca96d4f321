"""FlashMLA-style sparse MLA decode over an FP8 KV cache (DeepSeek-V3.2 "v32" and V4 "v4" layouts).

``sparse_decode`` computes KERNELS.md section 2 with split-KV: the positions (main top-k, then the
optional extra cache, one softmax) are cut into ranges of ``ceil(tiles / NUM_SPLITS)`` tiles (at most
``NUM_SPLITS`` of them: no program is launched for an empty range, ``launch_splits``); each program writes an
fp32 partial (normalized output + log2 lse) and a combine kernel merges them by lse in fp32 before the one
rounding to bf16. With one range the decode kernel finishes the rows itself (one launch). Config PDL (0 or
1, NVIDIA sm_90+, with splits): the combine is a programmatic dependent launch of the split pass (``_pdl.py``).

Choices where the spec is silent:
- An index ``>= num_pages * page_size`` of its cache is invalid like -1 (masked, never read): checking
  it on the host would need a device sync, and the launcher is CUDA-graph safe (no sync, no ``.item()``).
- ``topk_length`` [B] applies to every one of a request's S_q rows; the extra cache has the same
  layout and page size as the main cache. Only ``d_v == 512`` exists in both layouts.
- The sink is a logit in natural-log units: ``out *= 1 / (1 + exp(sink[h] - lse))``; lse excludes it.
- Lonely rows (no valid position): out = 0, lse = -inf; ``lonely_lse="+inf"`` gives FlashMLA's +inf.
- Config ``PATH``: "triton" (``_mla_kernels``; the default, every GPU and the interpreter) or "mma"
  (``_mla_mma``, Gluon, NVIDIA sm_89+ for its fp8 conversions: the warps split the dims, fp16 MMAs straight
  from the fp8 bytes; the faster path at every measured B on the H200, and the untuned default on sm_89+:
  ``runtime_default``).
  On the mma path H_TILE 16 runs 16 head rows per program (``_mla_mma``) and H_TILE 8 runs 8 heads as the
  MMA's N side (``_mla_mma8``: no padding rows where the rank has 8 heads, as V4-Flash at TP 8).
  A config without ``PATH`` is "triton".
- Config ``COMBINE`` (mma path, with splits): "launch" (the default, also for configs without the key) merges
  the partials in the combine kernel; "fused" lets the last program of each (row, head tile) to finish its
  split merge them (one launch; ``_mla_mma._last_split``). Its tickets (int32, one per row and head tile) live
  in buffers that every call leaves at 0 (``_tickets``): one per CUDA stream for eager calls (calls on one
  stream run one at a time) and one per device for the calls captured in CUDA graphs, so graphs with fused
  calls must not be replayed at the same time on two streams (PyTorch asks as much of graphs that share a
  memory pool). A capture cannot zero a buffer before its graph runs: an eager call makes it first (the usual
  warm-up does), else the capture raises. On the H100 it was never faster than "launch" with PDL (the same at
  B >= 64, slower at B = 1-8; BENCHMARKS.md): a tuning option, not the runtime default.
- On the Triton path K/V enter bf16 MMAs as ``bf16(fp8 * scale)``, like DeepSeek's FlashMLA: exact for v4
  (power-of-two scales), one rounding per value for v32's fp32 scales; q is used as given (bf16) and p is
  rounded to bf16. The mma path rounds only its PV weights (``_mla_mma``).
"""
from __future__ import annotations

import math
import os
from typing import Any

import torch
import triton

from aotune.kernels import _pdl
from aotune.kernels._mla_kernels import LOG2E, mla_combine_kernel, mla_decode_kernel
from aotune.kernels._mla_mma import mla_decode_mma_kernel
from aotune.kernels._mla_mma8 import mla_decode_mma8_kernel
from aotune.kernels._mla_space import (D_QK, SPACE, SparseDecodeProblem, combine_fits, combine_of, cost, input_shapes,
                                      known_miscompile, launch_splits, make_inputs, mma_fits, path_of,
                                      runtime_default)
from aotune.kernels.base import Inputs, Kernel, Launch
from aotune.kernels.device import FP8_CVT_CAPABILITY, device_class, has_fp8_cvt
from aotune.kernels.formats.mla_kv import gather_kv, v4_page_bytes
from aotune.kernels.space import Config

D_V = 512


def combine_cols(splits: int) -> int:
    """Output columns per combine program (4 warps): every split's loads are in flight at once, so a thread
    holds splits x cols / 128 floats: at most 64 (sm_90 registers: 92 at 16 splits x 512 columns, 136 at
    32 x 256, 206 at 64 x 128, or 168 and an 8-byte spill of one pointer with a sink; BENCHMARKS.md)."""
    per_thread = max(1, 64 // splits)
    return 128 * min(4, 1 << (per_thread.bit_length() - 1))  # a power of two (tl.arange)


def _need(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{name}: {message}")


def _check_cache(cache: torch.Tensor, name: str, layout: str, page_size: int, device: torch.device) -> torch.Tensor:
    if cache.dtype == torch.float8_e4m3fn:
        cache = cache.view(torch.uint8)
    _need(cache.dtype == torch.uint8, name, f"expected uint8 (or float8_e4m3fn) bytes, got {cache.dtype}")
    _need(cache.device == device, name, f"on {cache.device}, q on {device}")
    if layout == "v32":
        _need(cache.dim() == 3 and tuple(cache.shape[1:]) == (page_size, 656), name,
              f"expected [num_pages, {page_size}, 656] for layout v32, got {tuple(cache.shape)}")
        _need(cache.stride(2) == 1 and cache.stride(1) == 656 and cache.stride(0) % 4 == 0, name,
              f"tokens must be dense (656 B) and the page stride a multiple of 4, strides {cache.stride()}")
    else:
        page_bytes = v4_page_bytes(page_size)
        _need(cache.dim() == 2 and cache.shape[1] == page_bytes, name,
              f"expected [num_pages, {page_bytes}] for layout v4 and page_size {page_size}, got {tuple(cache.shape)}")
        _need(cache.stride(1) == 1 and cache.stride(0) % 4 == 0, name,
              f"bytes must be dense and the page stride a multiple of 4, strides {cache.stride()}")
    _need(cache.storage_offset() % 4 == 0, name, "storage offset must be a multiple of 4 bytes")
    return cache


def _check_index(idx: torch.Tensor, name: str, lead: tuple[int, ...], device: torch.device) -> None:
    _need(idx.dtype == torch.int32, name, f"expected int32, got {idx.dtype}")
    _need(idx.device == device, name, f"on {idx.device}, q on {device}")
    _need(tuple(idx.shape[: len(lead)]) == lead and idx.dim() == len(lead) + (len(lead) > 1), name,
          f"expected shape {list(lead) + (['T'] if len(lead) > 1 else [])}, got {tuple(idx.shape)}")
    _need(idx.is_contiguous(), name, "must be contiguous")


def _validate(q: torch.Tensor, kv_cache: torch.Tensor, indices: torch.Tensor, layout: str, page_size: int,
              sm_scale: float, d_v: int, topk_length: Any, extra: tuple[Any, Any, Any], attn_sink: Any,
              lonely_lse: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check every argument; return the byte views of the main and extra caches."""
    _need(layout in D_QK, "layout", f"expected 'v32' or 'v4', got {layout!r}")
    _need(isinstance(page_size, int) and page_size >= 1, "page_size", f"must be an int >= 1, got {page_size!r}")
    _need(isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale) and sm_scale > 0, "sm_scale",
          f"must be a finite float > 0, got {sm_scale!r}")
    _need(d_v == D_V, "d_v", f"only {D_V} is supported, got {d_v}")
    _need(lonely_lse in ("-inf", "+inf"), "lonely_lse", f"expected '-inf' or '+inf', got {lonely_lse!r}")
    _need(q.dtype == torch.bfloat16 and q.dim() == 4 and q.shape[3] == D_QK[layout], "q",
          f"expected bf16 [B, S_q, H, {D_QK[layout]}], got {q.dtype} {tuple(q.shape)}")
    _need(q.is_contiguous(), "q", "must be contiguous")
    B, S_q, H, _ = q.shape
    cache = _check_cache(kv_cache, "kv_cache", layout, page_size, q.device)
    _check_index(indices, "indices", (B, S_q), q.device)
    if topk_length is not None:
        _check_index(topk_length, "topk_length", (B,), q.device)
    extra_cache, extra_indices, extra_length = extra
    _need((extra_cache is None) == (extra_indices is None), "extra_indices",
          "extra_kv_cache and extra_indices come together")
    _need(extra_length is None or extra_cache is not None, "extra_topk_length", "given without extra_kv_cache")
    xcache = None
    if extra_cache is not None:
        xcache = _check_cache(extra_cache, "extra_kv_cache", layout, page_size, q.device)
        _check_index(extra_indices, "extra_indices", (B, S_q), q.device)
        if extra_length is not None:
            _check_index(extra_length, "extra_topk_length", (B,), q.device)
    if attn_sink is not None:
        _need(attn_sink.dtype == torch.float32 and tuple(attn_sink.shape) == (H,) and attn_sink.device == q.device,
              "attn_sink", f"expected fp32 [{H}] on {q.device}, got {attn_sink.dtype} {tuple(attn_sink.shape)}")
    return cache, xcache


def _cache_args(cache: torch.Tensor, layout: str, page_size: int) -> tuple[Any, ...]:
    """(u8, bf16 view, fp32 view, token count, page stride in bytes) of one validated cache."""
    f32 = cache.view(torch.float32) if layout == "v32" else cache
    return cache, cache.view(torch.bfloat16), f32, cache.shape[0] * page_size, cache.stride(0)


def _fp8_asm(device: torch.device) -> bool:
    """Whether the Triton path converts fp8 with inline PTX (``cvt.rn.f16x2.e4m3x2``, sm_89+); else it unpacks the
    bytes with plain integer ops: under Triton's interpreter (no inline PTX) and on sm_80 / sm_86 GPUs. Other
    tensors (meta: ``launches``) say sm_89+; compiling them for a target takes its own (``_asm_by_arch``)."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("1", "true", "True"):
        return False
    return device.type != "cuda" or has_fp8_cvt(device_class(device))


def _asm_by_arch(capability: int) -> dict[str, Any]:
    """The Triton path's ``ASM`` when compiling for a target (``Launch.arch_kwargs``): the fp8 conversion exists
    from sm_89 (``_fp8_asm``)."""
    return {"ASM": capability >= FP8_CVT_CAPABILITY}


def _plan(q: torch.Tensor, cache: torch.Tensor, indices: torch.Tensor, topk_length: Any, xcache: Any,
          xindices: Any, xlength: Any, sink: Any, out: torch.Tensor, lse: torch.Tensor, parts: Any,
          layout: str, page_size: int, sm_scale: float, lonely_pos: bool,
          config: Config) -> list[tuple[Launch, tuple[int, ...]]]:
    """The launches (and grids) of one call: shared by the launcher and ``launches`` (meta tensors). With the
    config's PDL and split-KV, the combine is a PDL dependent of the split pass (``_pdl``)."""
    B, S_q, H, _ = q.shape
    splits, h_tile = config["NUM_SPLITS"], config["H_TILE"]
    main = _cache_args(cache, layout, page_size)
    extra = _cache_args(xcache, layout, page_size) if xcache is not None else main
    xidx = xindices if xindices is not None else indices
    part_o, part_lse, tickets = parts if parts is not None else (lse, lse, None)
    fused, mma = tickets is not None, path_of(config) == "mma"
    ticket_arg = (tickets if fused else lse,) if mma else ()  # the mma kernels' ticket_ptr
    args = (q, *main[:3], indices, topk_length if topk_length is not None else indices, main[3], main[4],
            indices.shape[2], *extra[:3], xidx, xlength if xlength is not None else xidx, extra[3], extra[4],
            xindices.shape[2] if xindices is not None else 0, sink if sink is not None else lse,
            out, lse, part_o, part_lse, *ticket_arg, S_q, H, float(sm_scale) * LOG2E)
    flags = dict(HAS_SINK=sink is not None, LONELY_POS=lonely_pos)
    kwargs = dict(LAYOUT=0 if layout == "v32" else 1, PAGE=page_size, BLOCK_T=config["BLOCK_T"], H_TILE=h_tile,
                  NUM_SPLITS=splits, HAS_LEN=topk_length is not None, HAS_XLEN=xlength is not None, **flags,
                  num_warps=config["num_warps"], num_stages=config["num_stages"])
    if mma:
        decode = mla_decode_mma8_kernel if h_tile == 8 else mla_decode_mma_kernel
        kwargs.update(FUSED=fused, **(dict(RING=3) if config["num_stages"] == 3 else {}))
        by_arch = None
    else:
        decode = mla_decode_kernel
        kwargs.update(HP=max(16, h_tile), ASM=_fp8_asm(q.device), STAGES=config["num_stages"])
        by_arch = _asm_by_arch  # compiling ahead of time takes the target's ASM
    chained = dict(PDL=True) if config.get("PDL", 0) and splits > 1 else {}
    plan = [(Launch(decode, args, dict(kwargs, **chained), by_arch), (triton.cdiv(H, h_tile), B * S_q, splits))]
    if splits > 1 and not fused:
        cols = combine_cols(splits)
        combine = Launch(mla_combine_kernel, (part_o, part_lse, sink if sink is not None else lse, out, lse, S_q, H),
                         dict(NUM_SPLITS=splits, CB=cols, **flags, num_warps=4, num_stages=1,
                              **(dict(chained, launch_pdl=True) if chained else {})))
        plan.append((combine, (B * S_q, H, D_V // cols)))
    return plan


_TICKETS: dict[tuple[str, Any], list[torch.Tensor]] = {}
_MIN_TICKETS = 1 << 14  # 64 KiB: every decode shape of KERNELS.md (B 256 x S_q 4 x 8 head tiles is 8,192)


def _tickets(device: torch.device, count: int) -> torch.Tensor:
    """``count`` int32 zeros for the fused combine's tickets (``_mla_mma._last_split`` leaves them 0): the
    current stream's buffer, or inside a CUDA-graph capture the device's buffer for graphs. Both are made (zeroed
    in stream order) by an eager call: a capture cannot zero memory before its graph is replayed, so a capture
    that needs more tickets than eager calls made raises. A buffer outgrown is kept alive, never freed: a graph
    may hold its address. Meta tensors (``launches``) get a fresh meta buffer."""
    if device.type != "cuda":
        return torch.empty(count, dtype=torch.int32, device=device)
    capturing = torch.cuda.is_current_stream_capturing()
    keys = [(str(device), "graphs")]
    if not capturing:
        keys.insert(0, (str(device), torch.cuda.current_stream(device).cuda_stream))
    for key in keys:
        buffers = _TICKETS.setdefault(key, [])
        if not buffers or buffers[-1].numel() < count:
            if capturing:
                raise RuntimeError(f"sparse_decode: COMBINE 'fused' needs {count} tickets and the CUDA graphs' "
                                   f"buffer on {device} has {buffers[-1].numel() if buffers else 0}: make one call "
                                   "of this shape (or larger) on this device before capturing")
            buffers.append(torch.zeros(max(count, _MIN_TICKETS), dtype=torch.int32, device=device))
    return _TICKETS[keys[0]][-1]


def _outputs(q: torch.Tensor, splits: int, h_tile: int, fused: bool) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """out, lse, and with splits the fp32 partials and (COMBINE "fused") the tickets."""
    B, S_q, H, _ = q.shape
    out = torch.empty(B, S_q, H, D_V, dtype=torch.bfloat16, device=q.device)
    lse = torch.empty(B, H, S_q, dtype=torch.float32, device=q.device)
    parts = None
    if splits > 1:
        parts = (torch.empty(B * S_q * splits * H * D_V, dtype=torch.float32, device=q.device),
                 torch.empty(B * S_q * splits * H, dtype=torch.float32, device=q.device),
                 _tickets(q.device, B * S_q * triton.cdiv(H, h_tile)) if fused else None)
    return out, lse, parts


def sparse_decode(q: torch.Tensor, kv_cache: torch.Tensor, indices: torch.Tensor, *, layout: str, page_size: int,
                  sm_scale: float, d_v: int = 512, topk_length: torch.Tensor | None = None,
                  extra_kv_cache: torch.Tensor | None = None, extra_indices: torch.Tensor | None = None,
                  extra_topk_length: torch.Tensor | None = None, attn_sink: torch.Tensor | None = None,
                  lonely_lse: str = "-inf", config: Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse MLA decode: ``(out bf16 [B, S_q, H, d_v], lse fp32 [B, H, S_q])`` (KERNELS.md section 2).

    ``q`` bf16 ``[B, S_q, H, D_qk]`` (576 for v32, 512 for v4); ``indices`` int32 ``[B, S_q, T]`` token ids
    (page * page_size + offset; < 0 or past the cache is invalid); ``topk_length`` int32 [B] masks t >= it.
    The extra cache's tokens join the same softmax. CUDA-graph safe: no host sync.
    """
    cache, xcache = _validate(q, kv_cache, indices, layout, page_size, sm_scale, d_v, topk_length,
                              (extra_kv_cache, extra_indices, extra_topk_length), attn_sink, lonely_lse)
    problem = problem_of(q, indices, layout, page_size, topk_length, extra_indices, attn_sink)
    if config is None:
        from aotune.kernels.runtime import resolve_config
        config = resolve_config(KERNEL, problem, q.device)  # the loader answers only configs the space allows
    elif reason := known_miscompile(config, problem) or mma_fits(config, problem) or combine_fits(config, problem):
        # the other constraints only prune
        raise ValueError(f"config: {reason}")
    if path_of(config) == "mma" and not q.is_cuda:
        raise ValueError("config: PATH 'mma' is a Gluon kernel and needs a CUDA GPU (not the CPU interpreter)")
    if path_of(config) == "mma" and not has_fp8_cvt(device_class(q.device)):
        raise ValueError(f"config: PATH 'mma' needs an NVIDIA GPU of sm_89 or later (fp8 conversions), not "
                         f"{device_class(q.device).arch}")
    if config.get("PDL", 0) and not _pdl.supported(q.device):
        raise ValueError(f"config: PDL 1 (programmatic dependent launch) needs an NVIDIA GPU of sm_90 or later, "
                         f"not {q.device}")
    config = dict(config, NUM_SPLITS=launch_splits(config, problem))
    out, lse, parts = _outputs(q, config["NUM_SPLITS"], config["H_TILE"], combine_of(config) == "fused")
    for launch, grid in _plan(q, cache, indices, topk_length, xcache, extra_indices, extra_topk_length, attn_sink,
                              out, lse, parts, layout, page_size, sm_scale, lonely_lse == "+inf", config):
        launch.fn[grid](*launch.args, **launch.kwargs)
    return out, lse


def _scores(q: torch.Tensor, cache: torch.Tensor, idx: torch.Tensor, length: Any, layout: str, page_size: int,
            sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scores [B, S_q, H, T] (-inf where invalid) and the gathered tokens [B, S_q, T, D]."""
    n_tok = cache.shape[0] * page_size
    pos = torch.arange(idx.shape[2], device=idx.device)
    valid = (idx >= 0) & (idx < n_tok)
    if length is not None:
        valid &= pos[None, None, :] < length[:, None, None]
    kv = gather_kv(cache, torch.where(valid, idx, 0), layout=layout, page_size=page_size)
    kv = kv * valid[..., None]
    s = torch.einsum("bshd,bstd->bsht", q.float(), kv) * sm_scale
    return s.masked_fill(~valid[:, :, None, :], float("-inf")), kv


def sparse_decode_ref(q: torch.Tensor, kv_cache: torch.Tensor, indices: torch.Tensor, *, layout: str,
                      page_size: int, sm_scale: float, d_v: int = 512, topk_length: torch.Tensor | None = None,
                      extra_kv_cache: torch.Tensor | None = None, extra_indices: torch.Tensor | None = None,
                      extra_topk_length: torch.Tensor | None = None, attn_sink: torch.Tensor | None = None,
                      lonely_lse: str = "-inf", config: Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 PyTorch reference of ``sparse_decode`` (same signature; ``config`` is ignored; out stays fp32)."""
    cache, xcache = _validate(q, kv_cache, indices, layout, page_size, sm_scale, d_v, topk_length,
                              (extra_kv_cache, extra_indices, extra_topk_length), attn_sink, lonely_lse)
    s, kv = _scores(q, cache, indices, topk_length, layout, page_size, sm_scale)
    if xcache is not None:
        xs, xkv = _scores(q, xcache, extra_indices, extra_topk_length, layout, page_size, sm_scale)
        s, kv = torch.cat([s, xs], dim=3), torch.cat([kv, xkv], dim=2)
    lse = torch.logsumexp(s, dim=3)
    finite = torch.isfinite(lse)
    p = torch.where(finite[..., None], torch.exp(s - torch.where(finite, lse, 0.0)[..., None]), 0.0)
    out = torch.einsum("bsht,bstd->bshd", p, kv[..., :d_v])
    if attn_sink is not None:
        out = out * torch.sigmoid(lse - attn_sink)[..., None]
    if lonely_lse == "+inf":
        lse = torch.where(finite, lse, float("inf"))
    return out, lse.permute(0, 2, 1).contiguous()


def problem_of(q: torch.Tensor, indices: torch.Tensor, layout: str, page_size: int, topk_length: Any,
               extra_indices: Any, attn_sink: Any) -> SparseDecodeProblem:
    """The problem key of one call (what the loader looks configs up by)."""
    B, S_q, H, _ = q.shape
    return SparseDecodeProblem(B=B, S_q=S_q, H=H, topk=indices.shape[2], layout=layout, page_size=page_size,
                               extra_topk=0 if extra_indices is None else extra_indices.shape[2],
                               has_sink=attn_sink is not None, has_topk_length=topk_length is not None)


def launches(problem: SparseDecodeProblem, config: Config) -> list[Launch]:
    """The exact launches of ``sparse_decode`` on ``make_inputs(problem)``, with meta tensors."""
    meta = {name: torch.empty(shape, dtype=dtype, device="meta") for name, (shape, dtype) in
            input_shapes(problem).items()}
    q = meta["q"]
    config = dict(config, NUM_SPLITS=launch_splits(config, problem))
    out, lse, parts = _outputs(q, config["NUM_SPLITS"], config["H_TILE"], combine_of(config) == "fused")
    return [launch for launch, _ in _plan(
        q, meta["kv_cache"], meta["indices"], meta.get("topk_length"), meta.get("extra_kv_cache"),
        meta.get("extra_indices"), meta.get("extra_topk_length"), meta.get("attn_sink"), out, lse, parts,
        problem.layout, problem.page_size, 0.1, False, config)]


def _run(inputs: Inputs, config: Config) -> Any:
    return sparse_decode(**inputs, config=config)


def _reference(inputs: Inputs) -> Any:
    return sparse_decode_ref(**inputs)


KERNEL = Kernel(
    name="flash_mla",
    problem_type=SparseDecodeProblem,
    space=SPACE,
    make_inputs=make_inputs,
    run=_run,
    reference=_reference,
    launches=launches,
    cost=cost,
    runtime_default=runtime_default,
    tolerance=1e-2,
    source_modules=(__name__, "aotune.kernels._mla_kernels", "aotune.kernels._mla_mma", "aotune.kernels._mla_mma8",
                    "aotune.kernels._mla_space", "aotune.kernels.formats.mla_kv", "aotune.kernels._pdl"),
    timing="graph",
)
