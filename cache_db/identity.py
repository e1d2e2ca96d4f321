"""Device identity: what a tuned config is valid for, on the hardware side (standard library only).

A device class is (vendor, architecture, product, opt-in shared memory per block, SM count). Tuned
results are keyed per product; the architecture is the fallback level; the shared-memory limit is a
hard filter at every level. This module is on the runtime path: it must import nothing but stdlib.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

INTERPRETER_ARCH = "interp"


def normalize_product(name: str) -> str:
    """Canonical product name: lower case, vendor prefix dropped, runs of non-alphanumerics -> '-'.

    "NVIDIA H100 80GB HBM3" -> "h100-80gb-hbm3"; "NVIDIA GeForce RTX 5090" -> "geforce-rtx-5090".
    """
    text = name.strip().lower()
    text = re.sub(r"^(nvidia|amd)\s+", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@dataclass(frozen=True)
class DeviceClass:
    """The identity of a GPU model (or of the CPU interpreter) that configs are tuned for."""

    vendor: str
    arch: str
    product: str
    smem_per_block: int
    sm_count: int

    @property
    def key(self) -> str:
        """Stable, human-readable key, e.g. ``nvidia/sm_90/h100-80gb-hbm3``."""
        return f"{self.vendor}/{self.arch}/{self.product}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceClass:
        return cls(
            vendor=str(data["vendor"]),
            arch=str(data["arch"]),
            product=normalize_product(str(data["product"])),
            smem_per_block=int(data["smem_per_block"]),
            sm_count=int(data["sm_count"]),
        )

    @classmethod
    def from_properties(
        cls, name: str, major: int, minor: int, smem_optin: int, sm_count: int, vendor: str = "nvidia"
    ) -> DeviceClass:
        """Build a device class from the properties a live device reports."""
        return cls(vendor, f"sm_{major}{minor}", normalize_product(name), int(smem_optin), int(sm_count))


# The CPU interpreter (TRITON_INTERPRET=1): the whole tuning loop runs on it, times are not meaningful.
# Its shared-memory limit is sm_90's, so the feasibility stage compiles its candidates for sm_90.
INTERPRETER = DeviceClass("cpu", INTERPRETER_ARCH, "triton-interpreter", 232448, 1)
