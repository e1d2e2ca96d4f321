"""What a worker reports about its device: raw properties, normalized by the tuner into a device class."""
from __future__ import annotations

import os
import platform
import socket
from typing import Any


def environment() -> dict[str, Any]:
    """Versions of Triton, torch and CUDA in this process, and the host name."""
    import torch
    import triton

    return {"triton": triton.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
            "host": socket.gethostname(), "python": platform.python_version()}


def device_properties(index: int = 0) -> dict[str, Any]:
    """The live GPU ``index`` as the tuner needs it (product, capability, opt-in shared memory, SMs)."""
    import torch

    props = torch.cuda.get_device_properties(index)
    return {
        "vendor": "nvidia" if torch.version.hip is None else "amd",
        "name": props.name, "major": props.major, "minor": props.minor,
        "smem_optin": int(props.shared_memory_per_block_optin), "sm_count": int(props.multi_processor_count),
        "uuid": str(getattr(props, "uuid", "")),
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


def interpreter_properties() -> dict[str, Any]:
    """The CPU interpreter (TRITON_INTERPRET=1) described like a device."""
    return {"vendor": "cpu", "name": "triton-interpreter", "major": None, "minor": None, "smem_optin": None,
            "sm_count": 1, "uuid": "", "visible_devices": ""}
