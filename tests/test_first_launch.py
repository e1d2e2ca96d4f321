"""GPU: a bundle's binaries make the first launch in a fresh process compile nothing, host code included."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aotune.cache_db.bundle import DeviceModel, Entry, new_bundle, write_bundle
from aotune.kernels import get_kernel

PROBLEM = {"M": 48, "N": 256, "K": 96}
CONFIG = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 1, "num_warps": 4, "num_stages": 2}

CHILD = """
import json, sys, torch
from aotune.kernels import get_kernel
from aotune.kernels.device import device_class
from aotune.kernels.runtime import resolve
kernel = get_kernel("selftest")
problem = kernel.problem(json.loads(sys.argv[1]))
inputs = kernel.make_inputs(problem, 0, "cuda")
out = kernel.run(inputs, None)
ref = kernel.reference(inputs)
err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
print(json.dumps({"err": err, "source": resolve(kernel, problem, device_class(None)).source}))
"""


@pytest.mark.gpu
def test_shipped_binaries_need_no_compiler(tmp_path: Path) -> None:
    from aotune.kernels.device import device_class
    from aotune.tuner.cli_bundle import binary_for

    kernel, device = get_kernel("selftest"), device_class(None)
    typed = kernel.problem(PROBLEM)
    binary = binary_for("selftest", typed.to_dict(), CONFIG, device.arch)
    assert binary is not None
    names = [name for launch in binary.launches for name in launch.files]
    assert any(n.startswith("__triton_launcher") and n.endswith(".so") for n in names), names
    assert any(n.startswith("cuda_utils") and n.endswith(".so") for n in names), names
    entry = Entry(kernel="selftest", kernel_version=kernel.version, device=device.key, problem_key=typed.key,
                  problem=typed.to_dict(), config=CONFIG, median_us=1.0, binaries=[binary])
    bundle = write_bundle(new_bundle([entry], {device.key: DeviceModel(**device.to_dict())}), tmp_path / "b.json")
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / "empty-cache"), "AOTUNE_BUNDLES": str(bundle),
           "CC": "/bin/false"}  # a C compilation (launcher stubs) would fail the child
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(PROBLEM)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["source"] == "exact" and result["err"] < 1e-2
    filled = {p.name for p in (tmp_path / "empty-cache").iterdir() if p.is_dir() and any(p.iterdir())}
    assert filled == {launch.dir for launch in binary.launches}  # no kernel was compiled either
