"""What the feasibility stage compiles ahead of time must be exactly what the JIT launches at run time:
otherwise the GPU worker compiles every trial again and the AOT binaries are never used."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aotune.kernels import get_kernel

CASES = {
    "selftest": [{"M": 48, "N": 64, "K": 96}, {"M": 1, "N": 64, "K": 32}],
    "mxfp4_moe": [{"M": 3, "K": 256, "I": 128, "E": 8, "top_k": 2}, {"M": 40, "K": 256, "I": 64, "E": 4, "top_k": 2}],
    "flash_mla": [{"B": 2, "S_q": 1, "H": 16, "topk": 64, "layout": "v32", "page_size": 64},
                  {"B": 1, "S_q": 2, "H": 8, "topk": 128, "layout": "v4", "page_size": 64, "extra_topk": 32}],
    "mqa_logits": [{"B": 2, "N": 2, "H": 16, "D": 64, "context": 256},
                   {"B": 3, "N": 1, "H": 16, "D": 64, "context": 128, "ctx_form": "window"}],
}


def _configs(name: str, problem: dict) -> list[dict]:
    """The default and up to two more valid configs (baseline sets first) that run on the CPU."""
    kernel = get_kernel(name)
    typed = kernel.problem(problem)
    extra = [c for s in kernel.space.baselines for c in kernel.space.baseline(s) if "fault" not in c]
    pool = [c for c in extra + [c.config for c in kernel.space.candidates(typed)]
            if kernel.space.check(c, typed) is None and c.get("DEQ", "arith") in ("arith", "group")]
    return [{}] + pool[:2]


@pytest.mark.parametrize("name", sorted(CASES))
def test_launches_specialize_like_the_launcher(name: str) -> None:
    cases = [[p, c] for p in CASES[name] for c in _configs(name, p)]
    env = dict(os.environ, TRITON_INTERPRET="0")
    probe = Path(__file__).with_name("aot_jit_probe.py")
    out = subprocess.run([sys.executable, str(probe), name, json.dumps(cases)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(cases)
    for line in lines:
        assert line["runtime"], line
        assert line["aot"] == line["runtime"], json.dumps(line, indent=1)
