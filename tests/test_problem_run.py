"""The driver's per-problem state: what a resumed job may and may not reuse."""
from __future__ import annotations

from pathlib import Path

from aotune.cache_db.identity import INTERPRETER
from aotune.cache_db.store import Store, TrialRecord
from aotune.kernels import config_key, get_kernel
from aotune.tuner.grid import PlannedProblem
from aotune.tuner.problem_run import ProblemRun, search_id
from aotune.tuner.select import pick_best


def _planned(restrict: dict) -> PlannedProblem:
    kernel = get_kernel("selftest")
    return PlannedProblem(kernel, kernel.problem({"M": 64, "N": 64, "K": 64}), kernel.space.restricted(restrict),
                          (), "test")


def test_a_trial_outside_todays_space_is_kept_but_never_the_winner(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.init()
    wide = _planned({})
    outside = dict(wide.kernel.space.default, num_warps=8)
    problem = wide.problem
    store.commit_trial(TrialRecord("selftest", wide.kernel.version, INTERPRETER, problem.key, problem.to_dict(),
                                   config_key(outside), outside, "ok", median_us=1.0, p20_us=1.0, p80_us=1.0))
    narrow = ProblemRun(_planned({"num_warps": [4]}), INTERPRETER, store)
    assert (config_key(outside), "final") in narrow.results
    assert not narrow.measured and pick_best(list(narrow.measured.values()), narrow.default_key) is None
    again = ProblemRun(wide, INTERPRETER, store)
    winner = pick_best(list(again.measured.values()), again.default_key)
    assert winner is not None and winner.config == outside


def test_search_id_changes_with_the_space_and_the_included_sets() -> None:
    base = search_id("exhaustive:x", _planned({}))
    assert base != search_id("exhaustive:x", _planned({"num_warps": [4]}))
    kernel = get_kernel("selftest")
    with_faults = PlannedProblem(kernel, kernel.problem({"M": 64, "N": 64, "K": 64}), kernel.space, ("faults",), "t")
    assert base != search_id("exhaustive:x", with_faults)
    assert base == search_id("exhaustive:x", _planned({}))
