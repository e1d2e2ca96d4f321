"""The MoE table's benchmark (``tests/bench/bench_mxfp4_moe.py``, GPU only) run on the CPU with its GPU calls
stubbed: the two rounds pick, refine and report what they should, so that a device call is not spent on a
broken script."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "bench"))
import bench_mxfp4_moe as bench  # noqa: E402


def _fake_us(config: dict[str, Any]) -> float:
    """A stable made-up time per config in which the mma path's register-buffer tiles lead and PDL and
    DOWN_TILES help, as measured on the H100."""
    digest = int(hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8], 16)
    lead = config["PATH"] == "mma" and config["BLOCK_K"] == 256 and config["num_stages"] == 1
    return 300.0 + digest % 900 - 200 * lead - 7 * config.get("PDL", 0) - 11 * (config.get("DOWN_TILES", 1) > 1)


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, dict[str, Any], int]]:
    """Every timing asked for, as (M, config, replays)."""
    timed: list[tuple[int, dict[str, Any], int]] = []

    def time_config(sets: list, config: dict[str, Any], reps: int) -> float:
        timed.append((sets[0]["problem"].M, config, reps))
        if config["PATH"] == "gemv" and config["BLOCK_N"] == 64:
            raise RuntimeError("a config that fails on the device")
        return _fake_us(config)

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "stub")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 3e12)
    monkeypatch.setattr(bench, "matmul_tflops", lambda: 800.0)
    monkeypatch.setattr(bench, "_sets", lambda p, n, seed: [dict(problem=p)] * n)
    monkeypatch.setattr(bench, "active_bytes", lambda p, sets: 1e8)
    monkeypatch.setattr(bench, "time_config", time_config)
    monkeypatch.setattr(bench, "fused_moe", lambda **kw: torch.zeros(4))
    monkeypatch.setattr(bench, "fused_moe_ref", lambda **kw: torch.zeros(4))
    monkeypatch.setattr(bench, "_events_ms", lambda fn, reps: [1.0])
    monkeypatch.setattr(bench, "precompile", lambda jobs: ["ok"] * len(jobs))
    return timed


def test_two_rounds_screen_everything_and_retime_the_shortlist_refined(stubbed, tmp_path, monkeypatch) -> None:
    out = tmp_path / "moe.json"
    monkeypatch.setattr(sys, "argv", ["bench", "--tokens", "1,8,32", "--models", "dsv4-flash-tp8", "--reps", "10",
                                      "--budget-s", "1000", "--json", str(out)])
    bench.main()
    rows = json.loads(out.read_text())["rows"]
    assert [r["M"] for r in rows] == [1, 8, 32]
    for row in rows:
        p = bench.MoEProblem(M=row["M"], **bench.MODELS["dsv4-flash-tp8"])
        screen = [c for m, c, reps in stubbed if m == p.M and reps == 3]
        final = [c for m, c, reps in stubbed if m == p.M and reps == 10]
        # every config but SGLang's (timed in the final round), no switch crossed in, likeliest winners first
        assert screen == [bench._plain(c) for c in bench.screen_order(p, bench.sweep(p))]
        assert sorted(map(str, screen)) == sorted(str(bench._plain(c)) for c in bench.sweep(p) if not c.get("_sglang"))
        assert screen[0]["PATH"] == ("gemv" if p.M <= 8 else "mma")
        assert row["tried"] == sum(not (c["PATH"] == "gemv" and c["BLOCK_N"] == 64) for c in screen)
        # "tuned" is the fastest of the final round (which holds both defaults): never slower than SGLang's best
        assert row["best_us"] == min(_fake_us(c) for c in final if c["PATH"] != "gemv" or c["BLOCK_N"] != 64)
        assert row["best_us"] <= min(row["sglang_us"], row["runtime_default_us"], row["default_us"])
        # the shortlist came back with its refinements: PDL at every decode M, DOWN_TILES 4 from M = 8
        assert any(c.get("PDL") == 1 for c in final)
        assert any(c.get("DOWN_TILES") == 4 for c in final) == (p.M >= 8)
        assert all(c.get("DOWN_TILES", 1) == 1 or (c["BLOCK_K"] == 256 and c["num_stages"] == 1) for c in final)


def test_refinements_follow_the_measured_rules() -> None:
    mma = dict(PATH="mma", BLOCK_M=8, BLOCK_N=32, BLOCK_K=256, GROUP_M=1, SPLIT_K=1, DEQ="group_asm", num_warps=1,
               num_stages=1)
    at = {m: bench.MoEProblem(M=m, **bench.MODELS["dsv4-flash-tp8"]) for m in (1, 8, 128)}
    assert bench.refinements(at[1], mma, pdl=True) == [dict(mma, PDL=1)]
    assert bench.refinements(at[8], mma, pdl=True) == [dict(mma, PDL=1), dict(mma, DOWN_TILES=4),
                                                        dict(mma, DOWN_TILES=4, PDL=1)]
    assert bench.refinements(at[128], mma, pdl=False) == [dict(mma, DOWN_TILES=4)]
    assert bench.refinements(at[8], dict(mma, num_stages=3, BLOCK_K=128), pdl=False) == []
    ranked = [(3.0, dict(mma, BLOCK_N=64)), (1.0, mma), (2.0, dict(mma, PATH="gemv")), (9.0, dict(mma, PATH="decode"))]
    assert bench.shortlist(ranked, 2) == [mma, dict(mma, PATH="gemv"), dict(mma, PATH="decode")]
