"""PyTorch reference math of the MQA indexer logits (fp32, the formula of KERNELS.md section 3)."""
from __future__ import annotations

import torch

from aotune.kernels.formats.index_kv import split_index_kv


def logits_rows(q: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor, relu: bool) -> torch.Tensor:
    """``sum_h w[r, h] * act(q[r, h] . keys[t])`` for float ``q [R, H, D]``, scaled ``keys [T, D]``: ``[R, T]``."""
    s = torch.einsum("rhd,td->rht", q.float(), keys.float())
    if relu:
        s = s.clamp_min(0.0)
    return (s * weights.float()[:, :, None]).sum(dim=1)


def _row_ends(context_lens: torch.Tensor, N: int, kv_len: int) -> list[list[int]]:
    """Per batch entry, the exclusive end of each draft row's visible tokens (clamped to [0, kv_len])."""
    lens = context_lens.long().cpu()
    if lens.dim() == 1:
        ends = lens[:, None] - N + 1 + torch.arange(N)[None, :]
    else:
        ends = lens
    return ends.clamp(0, kv_len).tolist()


def paged_reference_rows(q8: torch.Tensor, kv_cache: torch.Tensor, weights: torch.Tensor,
                         context_lens: torch.Tensor, block_table: torch.Tensor, max_context_len: int,
                         page_size: int, relu: bool) -> torch.Tensor:
    """The paged logits ``[B*N, max_context_len]``: gathers each batch entry's pages, -inf elsewhere."""
    B, N, H, D = q8.shape
    values, scales = split_index_kv(kv_cache, page_size)
    out = torch.full((B * N, max_context_len), float("-inf"), dtype=torch.float32, device=q8.device)
    kv_len = min(max_context_len, block_table.shape[1] * page_size)
    q = q8.view(torch.float8_e4m3fn).float()
    for b, ends in enumerate(_row_ends(context_lens, N, kv_len)):
        n = max(ends)
        if n <= 0:
            continue
        pages = block_table[b, : -(-n // page_size)].long()
        keys = (values[pages].view(torch.float8_e4m3fn).float() * scales[pages][:, :, None]).reshape(-1, D)[:n]
        logits = logits_rows(q[b], keys, weights[b * N:(b + 1) * N], relu)
        for j, end in enumerate(ends):
            out[b * N + j, :end] = logits[j, :end]
    return out
