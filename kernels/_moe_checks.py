"""Argument validation of ``fused_moe`` / ``fused_moe_ref``: every bad argument is a ValueError naming it."""
from __future__ import annotations

import math
from typing import Any

import torch

ACTIVATIONS = {"swiglu": 0, "swiglu_oai": 1}
LAYOUTS = {"gate_up": 0, "up_gate": 1, "interleaved": 2}
OAI_LIMIT = 7.0
WEIGHT_ROW_ALIGN = 16  # padded weight rows: the gemv / mma paths read them as int32 words, 16 bytes per load


def _tensor(name: str, t: Any, dtype: torch.dtype, shape: tuple[int, ...], device: torch.device,
            padded_rows: int = 0) -> None:
    """``t`` has the dtype, shape and device, and is contiguous; with ``padded_rows`` (MXFP4 weights and scales,
    [E, rows, n]) its rows may also be padded: row stride a multiple of ``padded_rows`` bytes (``pad_rows``)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: on {t.device}, but x is on {device}")
    if not t.is_contiguous() and not (padded_rows and _padded_rows(t, padded_rows)):
        allowed = f", or rows padded to a multiple of {padded_rows} bytes (pad_rows)" if padded_rows else ""
        raise ValueError(f"{name}: must be contiguous{allowed}; got strides {t.stride()}")


def _padded_rows(t: torch.Tensor, multiple: int) -> bool:
    """Whether ``t [E, rows, n]`` (one-byte elements) starts ``multiple``-byte aligned and has contiguous rows
    ``multiple``-byte aligned apart, the experts apart by whole rows, nothing overlapping."""
    experts, rows, row = t.stride()
    return (row == 1 and rows % multiple == 0 and rows >= t.shape[2] and experts % rows == 0
            and experts >= t.shape[1] * rows and t.data_ptr() % multiple == 0)


def _ids_in_range(topk_ids: torch.Tensor, num_experts: int) -> None:
    """Host check of the expert ids; skipped while a CUDA graph is being captured (it would sync)."""
    if topk_ids.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    if topk_ids.numel() and bool((topk_ids >= num_experts).any()):
        raise ValueError(f"topk_ids: holds expert ids >= E={num_experts} (negative ids mean 'skip')")


def check_inputs(x: Any, w13: Any, w13_scale: Any, w2: Any, w2_scale: Any, topk_ids: Any, topk_weights: Any,
                 activation: str, layout: str, swiglu_limit: float | None, w13_bias: Any, w2_bias: Any,
                 routed_scaling_factor: float, group_size: int) -> tuple[dict[str, Any], float | None]:
    """Validate everything; return the problem fields and the effective activation limit."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.bfloat16 or x.dim() != 2:
        raise ValueError(f"x: expected a 2-D bfloat16 tensor [M, K], got {getattr(x, 'dtype', type(x))}")
    if not x.is_contiguous():
        raise ValueError("x: must be contiguous")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {sorted(LAYOUTS)}, got {layout!r}")
    if activation == "swiglu_oai":
        if layout == "up_gate":
            raise ValueError("layout: swiglu_oai weights are interleaved (gate even rows, up odd rows)")
        layout = "interleaved"
    if not isinstance(group_size, int) or group_size < 2 or group_size & (group_size - 1):
        raise ValueError(f"group_size: expected a power of two >= 2, got {group_size!r}")
    if not isinstance(w13, torch.Tensor) or w13.dim() != 3 or not isinstance(w2, torch.Tensor) or w2.dim() != 3:
        raise ValueError("w13: expected uint8 [E, 2I, K/2] and w2 uint8 [E, K, I/2]")
    m, k = x.shape
    e, two_i = w13.shape[0], w13.shape[1]
    i = two_i // 2
    if two_i % 2 or k % group_size or i % group_size:
        raise ValueError(f"w13: 2I={two_i} and K={k} must be even multiples of group_size={group_size}")
    dev = x.device
    _tensor("w13", w13, torch.uint8, (e, 2 * i, k // 2), dev, WEIGHT_ROW_ALIGN)
    _tensor("w13_scale", w13_scale, torch.uint8, (e, 2 * i, k // group_size), dev, 1)
    _tensor("w2", w2, torch.uint8, (e, k, i // 2), dev, WEIGHT_ROW_ALIGN)
    _tensor("w2_scale", w2_scale, torch.uint8, (e, k, i // group_size), dev, 1)
    if not isinstance(topk_ids, torch.Tensor) or topk_ids.dim() != 2:
        raise ValueError("topk_ids: expected an int32 tensor [M, top_k]")
    top_k = topk_ids.shape[1]
    _tensor("topk_ids", topk_ids, torch.int32, (m, top_k), dev)
    _tensor("topk_weights", topk_weights, torch.float32, (m, top_k), dev)
    if w13_bias is not None:
        _tensor("w13_bias", w13_bias, torch.float32, (e, 2 * i), dev)
    if w2_bias is not None:
        _tensor("w2_bias", w2_bias, torch.float32, (e, k), dev)
    if (w13_bias is None) != (w2_bias is None):
        raise ValueError("w2_bias: pass both w13_bias and w2_bias, or neither")
    if not isinstance(routed_scaling_factor, (int, float)) or not math.isfinite(routed_scaling_factor):
        raise ValueError(f"routed_scaling_factor: expected a finite float, got {routed_scaling_factor!r}")
    if swiglu_limit is not None and not (isinstance(swiglu_limit, (int, float)) and swiglu_limit > 0):
        raise ValueError(f"swiglu_limit: expected None or a positive float, got {swiglu_limit!r}")
    _ids_in_range(topk_ids, e)
    limit = OAI_LIMIT if activation == "swiglu_oai" and swiglu_limit is None else swiglu_limit
    fields = dict(M=m, K=k, I=i, E=e, top_k=top_k, group_size=group_size, activation=activation,
                  layout=layout, has_bias=w13_bias is not None)
    return fields, None if limit is None else float(limit)
