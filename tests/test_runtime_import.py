"""The runtime path (kernels + loader) never imports SQLAlchemy, pydantic or Ray."""
from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import aotune.kernels
import aotune.kernels.selftest
import aotune.kernels.runtime
from aotune.cache_db import loader
from aotune.cache_db.identity import INTERPRETER
from aotune.kernels import get_kernel
from aotune.kernels.runtime import resolve
kernel = get_kernel("selftest")
answer = resolve(kernel, kernel.problem({"M": 48, "N": 64, "K": 96}), INTERPRETER)
for name in ("mxfp4_moe", "flash_mla", "mqa_logits"):
    try:
        get_kernel(name)
    except Exception:
        pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "pydantic", "ray", "pydantic_core"})
print(json.dumps({"heavy": heavy, "source": answer.source}))
"""


def test_runtime_path_imports_no_heavy_packages() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                         env={"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"}).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["heavy"] == [], f"the runtime path imported {result['heavy']}"
    assert result["source"].startswith("default")


def test_loader_alone_is_standard_library_only() -> None:
    script = ("import sys; import aotune.cache_db.loader; "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'triton', 'sqlalchemy', 'pydantic', "
              "'ray', 'numpy'}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
