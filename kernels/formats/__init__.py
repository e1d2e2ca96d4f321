"""Byte formats of the kernels' operands: MXFP4 weights, the FP8 MLA KV caches (V3.2 and V4 layouts)
and the FP8 indexer key cache. Pack functions build what the kernels read; unpack functions return
exactly the values the kernels must see.
"""
from __future__ import annotations

from aotune.kernels.formats.index_kv import pack_index_kv, split_index_kv, unpack_index_kv
from aotune.kernels.formats.mla_kv import gather_kv, pack_kv_v4, pack_kv_v32, unpack_kv_v4, unpack_kv_v32, v4_page_bytes
from aotune.kernels.formats.mxfp4 import E2M1_VALUES, dequantize_mxfp4, pad_rows, quantize_mxfp4

__all__ = [
    "E2M1_VALUES", "dequantize_mxfp4", "gather_kv", "pack_index_kv", "pack_kv_v32", "pack_kv_v4", "pad_rows",
    "quantize_mxfp4",
    "split_index_kv", "unpack_index_kv", "unpack_kv_v32", "unpack_kv_v4", "v4_page_bytes",
]
