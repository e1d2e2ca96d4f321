"""AOT compilation for targets this machine does not have: real figures from Triton and cuobjdump."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from aotune.tuner.arch import get_arch
from aotune.tuner.cli import app
from aotune.tuner.feasibility import compile_candidate, compile_many

BIG = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4}
SMALL = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 2}
PROBLEM = {"M": 256, "N": 256, "K": 256}


def test_big_tile_exceeds_sm120_but_fits_sm90() -> None:
    on_120 = compile_candidate("selftest", PROBLEM, BIG, "sm_120")
    on_90 = compile_candidate("selftest", PROBLEM, BIG, "sm_90")
    assert on_120.status == "out_of_resources" and not on_120.fits
    assert on_120.shared_bytes > get_arch("sm_120").smem_per_block
    assert "shared memory" in on_120.reason
    assert on_90.fits and get_arch("sm_120").smem_per_block < on_90.shared_bytes <= get_arch("sm_90").smem_per_block
    assert on_90.registers > 0


def test_compile_error_is_classified() -> None:
    result = compile_candidate("selftest", PROBLEM, dict(SMALL, fault="compile"), "sm_90")
    assert result.status == "compile_error" and "on purpose" in result.reason


def test_space_cli_json_marks_fit_per_target(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AOTUNE_COMPILE_CACHE", str(tmp_path))
    args = ["space", "selftest", "--problem", "M=256", "--problem", "N=256", "--problem", "K=256", "--json",
            "--restrict", "BLOCK_M=64,128", "--restrict", "BLOCK_N=256", "--restrict", "BLOCK_K=64",
            "--restrict", "num_warps=8", "--restrict", "GROUP_M=8", "--restrict", "num_stages=2,4"]
    rows = {}
    for target in ("sm_120", "sm_90"):
        result = CliRunner().invoke(app, [*args, "--target", target])
        assert result.exit_code == 0, result.output
        rows[target] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows["sm_90"]) == len(rows["sm_120"]) == 4
    for row in rows["sm_120"]:
        assert set(row) >= {"config", "shared_bytes", "registers", "spills", "fits", "reason"}
        if row["status"] == "ok":
            assert row["shared_bytes"] <= 101376
    over = [r for r in rows["sm_120"] if r["shared_bytes"] > 101376]
    assert over and all(not r["fits"] and "shared memory" in r["reason"] for r in over)
    fits_90 = {json.dumps(r["config"], sort_keys=True) for r in rows["sm_90"] if r["fits"]}
    assert any(json.dumps(r["config"], sort_keys=True) in fits_90 for r in over)


def test_compile_many_gives_what_compile_candidate_gives() -> None:
    other = {"M": 512, "N": 256, "K": 256}  # same specialization as PROBLEM: the same binaries
    jobs = [(PROBLEM, BIG), (PROBLEM, SMALL), (PROBLEM, dict(SMALL, fault="compile")), (other, SMALL),
            ({"M": 16, "N": 256, "K": 256}, dict(SMALL, BLOCK_M=128))]  # a tile larger than M: invalid
    many = compile_many("selftest", jobs, "sm_120", workers=2)
    one_by_one = [compile_candidate("selftest", problem, config, "sm_120") for problem, config in jobs]
    assert [r.status for r in many] == [r.status for r in one_by_one] == [
        "out_of_resources", "ok", "compile_error", "ok", "invalid"]
    assert [(r.shared_bytes, r.registers, r.spills, r.reason) for r in many] == [
        (r.shared_bytes, r.registers, r.spills, r.reason) for r in one_by_one]
    assert compile_many("selftest", [], "sm_120") == []


def test_launch_identity_tells_which_launches_share_a_binary() -> None:
    """MoE configs that differ only in the second GEMM's row tiles (DOWN_TILES) share the first GEMM's binary
    and the reduce's, not the second GEMM's; a first-GEMM key (BLOCK_N) changes both GEMMs'. Runs in a child
    process: under the interpreter the kernels are not JIT functions."""
    mma = dict(PATH="mma", BLOCK_M=8, BLOCK_N=32, BLOCK_K=256, GROUP_M=1, SPLIT_K=1, DEQ="group_asm", num_warps=1,
               num_stages=1)
    configs = [mma, dict(mma, DOWN_TILES=4), dict(mma, BLOCK_N=64, num_warps=2)]
    script = ("import json; from aotune.tuner.feasibility import launch_identity; from aotune.tuner.arch import "
              "get_arch; from aotune.kernels import get_kernel; k = get_kernel('mxfp4_moe');"
              "p = k.problem(dict(M=8, K=4096, I=256, E=256, top_k=6));"
              f"print(json.dumps([[(l.fn.__name__, launch_identity(l, get_arch('sm_90'))) for l in k.launches(p, c)]"
              f" for c in {configs!r}]))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    plain, tiled, wider = (dict(launches) for launches in json.loads(out.stdout))
    assert plain.keys() == tiled.keys() == wider.keys() and len(plain) >= 3
    gemm2 = [name for name in plain if plain[name] != tiled[name]]
    assert len(gemm2) == 1 and "2" in gemm2[0]  # only the second GEMM's binary differs
    assert sum(plain[name] != wider[name] for name in plain) >= 2  # both GEMMs change with BLOCK_N
