"""AOT compilation for targets this machine does not have: real figures from Triton and cuobjdump."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from aotune.tuner.arch import get_arch
from aotune.tuner.cli import app
from aotune.tuner.feasibility import compile_candidate

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
