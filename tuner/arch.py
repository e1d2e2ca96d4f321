"""GPU architectures the tuner compiles for, with the limits a config must fit.

Shared memory is the opt-in maximum per block (KERNELS.md); registers are per thread (ptxas never
exceeds 255) and per SM (a block of ``num_warps * 32`` threads must fit in the register file).
On a live device, prefer the device's own ``shared_memory_per_block_optin`` (its DeviceClass).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str
    capability: int
    smem_per_block: int
    regs_per_sm: int = 65536
    regs_per_thread: int = 255
    max_threads_per_block: int = 1024


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("sm_80", 80, 166912),
        Arch("sm_86", 86, 101376),
        Arch("sm_89", 89, 101376),
        Arch("sm_90", 90, 232448),
        Arch("sm_100", 100, 232448),
        Arch("sm_120", 120, 101376),
    )
}


def get_arch(name: str) -> Arch:
    """The arch named ``sm_XY`` (``sm_90a`` and ``90`` are accepted); ValueError lists the known ones."""
    text = name.strip().lower().removesuffix("a")
    if text.isdigit():
        text = f"sm_{text}"
    if text not in ARCHES:
        raise ValueError(f"unknown target {name!r}; known targets: {sorted(ARCHES)}")
    return ARCHES[text]
