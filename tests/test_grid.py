from __future__ import annotations

from pathlib import Path

import pytest

from aotune.kernels import config_key
from aotune.tuner.grid import GRIDS_DIR, GridError, load_grid, plan


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return str(path)


def test_smoke_grid_plans_two_problems_with_default() -> None:
    problems = plan(load_grid("smoke"))
    assert [p.problem.key for p in problems] == ["M=48,N=64,K=96", "M=80,N=64,K=96"]
    for p in problems:
        candidates = p.candidates()
        keys = {config_key(c.config) for c in candidates}
        assert config_key(p.kernel.space.default) in keys
        assert all(c.config["BLOCK_K"] == 32 for c in candidates if c.config != p.kernel.space.default)
        assert len(candidates) == 4 * 2  # BLOCK_M x BLOCK_N (the default is one of them)


@pytest.mark.parametrize("text,needle", [
    ("name: x\nentries: []\n", "field entries"),
    ("name: x\nentries:\n  - kernel: nope\n    problem: {M: 1}\n", "entries[0] (nope): field kernel"),
    ("name: x\nentries:\n  - kernel: selftest\n    problem: {M: 1, N: 2}\n", "field problem: MatmulProblem: missing field 'K'"),
    ("name: x\nentries:\n  - kernel: selftest\n    problem: {M: 1, N: 2, K: 3}\n    restrict: {BLOCK_Q: [1]}\n",
     "field restrict.BLOCK_Q"),
    ("name: x\nentries:\n  - kernel: selftest\n    problem: {M: 1, N: 2, K: 3}\n    include: [nope]\n", "field include"),
    ("name: x\nentries:\n  - kernel: selftest\n    problem: {M: 1, N: 2, K: 3}\n    typo: 1\n", "entries.0.typo"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_grid_errors_name_file_entry_and_field(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(GridError) as info:
        load_grid(path)
    assert path in str(info.value) and needle in str(info.value)


def test_unknown_grid_lists_shipped_ones() -> None:
    with pytest.raises(GridError, match="smoke"):
        load_grid("no-such-grid")


def test_every_shipped_grid_is_valid() -> None:
    for path in sorted(GRIDS_DIR.glob("*.yaml")):
        grid = load_grid(str(path))
        assert plan(grid), path
