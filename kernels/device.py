"""The live device as a DeviceClass (memoized): what the loader matches tuned configs against.

A CUDA device reports its product name, compute capability, opt-in shared memory per block and SM
count through ``torch.cuda.get_device_properties``; a CPU device (the Triton interpreter,
``TRITON_INTERPRET=1``) is ``aotune.cache_db.identity.INTERPRETER``.
"""
from __future__ import annotations

import torch

from aotune.cache_db.identity import INTERPRETER, DeviceClass

_CLASSES: dict[object, DeviceClass] = {}


def device_class(device: torch.device | str | int | None = None) -> DeviceClass:
    """The DeviceClass of ``device`` (a torch.device, ``"cuda:1"``, an index, or None for the current one)."""
    found = _CLASSES.get(device)
    if found is None:
        found = _CLASSES[device] = _probe(device)
    return found


def _probe(device: torch.device | str | int | None) -> DeviceClass:
    if device is None:
        if not torch.cuda.is_available():
            return INTERPRETER
        device = torch.device("cuda", torch.cuda.current_device())
    elif isinstance(device, int):
        device = torch.device("cuda", device)
    device = torch.device(device)
    if device.type != "cuda":
        return INTERPRETER
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    smem = int(getattr(props, "shared_memory_per_block_optin", 0) or getattr(props, "shared_memory_per_block", 0))
    vendor = "amd" if getattr(torch.version, "hip", None) else "nvidia"
    return DeviceClass.from_properties(props.name, props.major, props.minor, smem, props.multi_processor_count,
                                       vendor=vendor)


def nvidia_capability(device: DeviceClass) -> int | None:
    """``device``'s compute capability as 10 * major + minor (sm_90a: 90), or None if it is not an NVIDIA GPU."""
    arch = device.arch.removeprefix("sm_").rstrip("a")
    return int(arch) if device.vendor == "nvidia" and arch.isdigit() else None


def has_mma_v2(device: DeviceClass) -> bool:
    """Whether ``device`` is an NVIDIA GPU the Gluon mma paths compile for (``mma.sync``: sm_80 and later)."""
    return (nvidia_capability(device) or 0) >= 80


FP8_CVT_CAPABILITY = 89  # the first compute capability with ``cvt.rn.f16x2.e4m3x2`` (and Triton's fp8e4nv)


def has_fp8_cvt(device: DeviceClass) -> bool:
    """Whether ``device`` is an NVIDIA GPU with the fp8 conversions (``cvt.rn.f16x2.e4m3x2``: sm_89 and later),
    which FlashMLA's mma path makes its MMA operands with (it does not compile for sm_80 / sm_86)."""
    return (nvidia_capability(device) or 0) >= FP8_CVT_CAPABILITY


def has_pdl(device: DeviceClass) -> bool:
    """Whether ``device`` is an NVIDIA GPU that runs programmatic dependent launches (sm_90 and later)."""
    return (nvidia_capability(device) or 0) >= 90
