"""warm_up: fills Triton's per-process caches (lazy gluon import, JIT cache keys) ahead of the first launch,
imports nothing heavy, and is idempotent. Run in a fresh process without the interpreter (real JIT objects)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
from aotune.kernels.warmup import _LAZY_TRITON_MODULE, _jit_functions, start_warm_up, warm_up
assert _LAZY_TRITON_MODULE not in sys.modules
fns = _jit_functions(["mxfp4_moe"])
before = sum(fn.hash is not None for fn in fns)
first = warm_up(["mxfp4_moe"])
after = sum(fn.hash is not None for fn in fns)
second = warm_up(["mxfp4_moe"])
start_warm_up(["flash_mla"]).join()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "pydantic", "ray"})
print(json.dumps({"steps": sorted(first), "n_fns": len(fns), "before": before, "after": after,
                  "gluon": _LAZY_TRITON_MODULE in sys.modules, "second_s": sum(second.values()), "heavy": heavy,
                  "names": sorted(fn.__name__ for fn in fns)}))
"""


def test_warm_up_fills_the_first_launch_caches() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"import_gluon", "triton_key", "jit_cache_keys", "platform_key"} <= set(result["steps"])
    assert {"_moe_gemv1", "_moe_gemv2", "_moe_gemm1", "_moe_reduce"} <= set(result["names"])
    assert result["before"] == 0 and result["after"] == result["n_fns"] > 0
    assert result["gluon"] and result["heavy"] == []
    assert result["second_s"] < 0.05  # everything was cached by the first call
