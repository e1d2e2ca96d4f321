"""Side-by-side timing of variants of FlashMLA's mma kernel on one GPU (plain script; a tool for kernel work).

``python3 tests/bench/mla_variants.py NAME=FILE [NAME=FILE ...] [--block-t 16] [--rounds 3]``: each FILE is a
copy of ``kernels/_mla_mma.py`` (``main`` names the installed one). For V3.2 and V4-Flash TP 8 at B = 1, 8, 64
and 256, with the split counts the sweep picks there (and 2 at B = 256), every variant runs the same config
(mma, the given BLOCK_T) on the same inputs: its rel_error against ``sparse_decode_ref`` and its time,
``bench_flash_mla.graph_time`` interleaved over the variants, best of ``--rounds``. BENCHMARKS.md, FlashMLA,
thirteenth session.
"""
from __future__ import annotations

import argparse

import torch
from bench_flash_mla import MODELS, copy_bandwidth, graph_time, input_sets
from mla_sass_loops import load_variant

from aotune.kernels import _mla_mma, flash_mla, rel_error
from aotune.kernels.flash_mla import SparseDecodeProblem, sparse_decode, sparse_decode_ref

SPLITS = {("V3.2 TP8", 1): [64, 32], ("V3.2 TP8", 8): [16], ("V3.2 TP8", 64): [4], ("V3.2 TP8", 256): [1, 2],
          ("V4-Flash TP8", 1): [32], ("V4-Flash TP8", 8): [16], ("V4-Flash TP8", 64): [4],
          ("V4-Flash TP8", 256): [1, 2]}


def interleaved(kernels: dict[str, object], attr: str, sets: list[dict], config: dict, ref: tuple,
                rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds (best of ``rounds`` of ``graph_time``, the variants interleaved) and the first round's error
    against ``ref`` of ``sparse_decode`` with ``flash_mla.<attr>`` (what it launches) set to each kernel."""
    original = getattr(flash_mla, attr)
    times, errors = {n: float("inf") for n in kernels}, {}
    try:
        for round_ in range(rounds):
            for name, kernel in kernels.items():
                setattr(flash_mla, attr, kernel)
                if round_ == 0:
                    out, lse = sparse_decode(**sets[0], config=config)
                    errors[name] = max(rel_error(out, ref[0]), rel_error(lse, ref[1]))
                times[name] = min(times[name], graph_time(sets, config))
    finally:
        setattr(flash_mla, attr, original)
    return times, errors


def header(names: list[str]) -> str:
    return "| model | B | splits | " + " | ".join(f"{n} us" for n in names) + " | " + " | ".join(
        f"{n} err" for n in names) + " |"


def row(model: str, batch: int, splits: int, times: dict[str, float], errors: dict[str, float]) -> str:
    return (f"| {model} | {batch} | {splits} | " + " | ".join(f"{t * 1e6:.1f}" for t in times.values()) + " | "
            + " | ".join(f"{e:.1e}" for e in errors.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="NAME=FILE (FILE 'main': the installed kernel)")
    parser.add_argument("--block-t", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kernels = {}
    for item in args.variants:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"variant {item!r}: expected NAME=FILE")
        kernels[name] = _mla_mma.mla_decode_mma_kernel if path == "main" else load_variant(path)
    print(f"device {torch.cuda.get_device_name()}; copy {copy_bandwidth() / 1e12:.2f} TB/s; BLOCK_T {args.block_t}")
    print(header(list(kernels)), flush=True)
    for (model, batch), split_counts in SPLITS.items():
        sets = input_sets(SparseDecodeProblem(B=batch, **MODELS[model]))
        ref = sparse_decode_ref(**sets[0])
        for splits in split_counts:
            config = dict(PATH="mma", BLOCK_T=args.block_t, H_TILE=16, NUM_SPLITS=splits, num_warps=4, num_stages=1)
            times, errors = interleaved(kernels, "mla_decode_mma_kernel", sets, config, ref, args.rounds)
            print(row(model, batch, splits, times, errors), flush=True)
        del sets
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
