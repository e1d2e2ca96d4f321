from __future__ import annotations

import pytest

from aotune.kernels import Choice, ConfigSpace, Pow2, config_key, get_kernel


def test_pow2_and_choice_values() -> None:
    assert Pow2(16, 128).values() == (16, 32, 64, 128)
    assert Choice(2, 4).values() == (2, 4)
    with pytest.raises(ValueError, match="powers of two"):
        Pow2(16, 100)
    with pytest.raises(ValueError, match="at least one"):
        Choice()


def test_space_enumerates_product_and_marks_invalid_with_reason() -> None:
    space = ConfigSpace(
        params={"BLOCK": Pow2(16, 64), "num_warps": Choice(4, 8)},
        default={"BLOCK": 16, "num_warps": 4},
        constraints=(lambda c, p: "too big" if c["BLOCK"] > p else None,),
        baselines={"hand": [{"BLOCK": 16, "num_warps": 8}]},
    )
    assert space.size() == 6
    cands = space.candidates(32, include=["hand"])
    assert len(cands) == 6  # the baseline config is already in the product: no duplicate
    invalid = [c for c in cands if c.invalid_reason]
    assert {c.config["BLOCK"] for c in invalid} == {64}
    assert all(c.invalid_reason == "too big" for c in invalid)
    with pytest.raises(KeyError, match="no baseline set 'nope'"):
        space.baseline("nope")


def test_default_must_cover_params() -> None:
    with pytest.raises(ValueError, match="lacks parameters"):
        ConfigSpace(params={"A": Choice(1)}, default={})


def test_config_key_is_order_independent() -> None:
    assert config_key({"a": 1, "b": 2}) == config_key({"b": 2, "a": 1})


def test_problem_key_roundtrip_and_errors() -> None:
    kernel = get_kernel("selftest")
    problem = kernel.problem({"M": "48", "N": 64, "K": 96})
    assert problem.key == "M=48,N=64,K=96"
    assert kernel.problem(problem.to_dict()) == problem
    assert len(problem.hash) == 16
    with pytest.raises(ValueError, match="unknown field"):
        kernel.problem({"M": 1, "N": 1, "K": 1, "Q": 3})
    with pytest.raises(ValueError, match="missing field 'K'"):
        kernel.problem({"M": 1, "N": 1})
    with pytest.raises(ValueError, match="field 'M'"):
        kernel.problem({"M": "x", "N": 1, "K": 1})


def test_unknown_kernel_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known kernels"):
        get_kernel("nope")


def test_fault_configs_are_opt_in() -> None:
    kernel = get_kernel("selftest")
    problem = kernel.problem({"M": 64, "N": 64, "K": 64})
    default_keys = {config_key(c.config) for c in kernel.space.candidates(problem)}
    assert not any("fault" in k for k in default_keys)
    with_faults = kernel.space.candidates(problem, include=["faults"])
    assert {c.config.get("fault") for c in with_faults} >= {"compile", "wrong", "hang", "kill"}


def _branched() -> ConfigSpace:
    return ConfigSpace(params={"PATH": Choice("a", "b"), "X": Choice(1, 2, 3), "Y": Choice(1, 2)},
                       default={"PATH": "a", "X": 1, "Y": 1},
                       branches=("PATH", {"a": {"X": Choice(1)}, "b": {"Y": Choice(2)}}))


def test_branches_enumerate_each_path_product_only() -> None:
    space = _branched()
    configs = list(space.configs())
    assert space.size() == len(configs) == 2 + 3
    assert {(c["PATH"], c["X"]) for c in configs} == {("a", 1), ("b", 1), ("b", 2), ("b", 3)}
    assert all(c["Y"] == 2 for c in configs if c["PATH"] == "b")
    restricted = space.restricted({"X": [2, 3]})  # branch "a" keeps no X: it is empty
    assert [c["X"] for c in restricted.configs()] == [2, 3] and restricted.size() == 2
    with pytest.raises(ValueError, match="branches"):
        ConfigSpace(params={"P": Choice("a")}, default={"P": "a"}, branches=("P", {"a": {"Z": Choice(1)}}))
    with pytest.raises(ValueError, match="branches"):
        ConfigSpace(params={"P": Choice("a"), "X": Choice(1)}, default={"P": "a", "X": 1},
                    branches=("P", {"a": {"X": Choice(2)}}))


def test_moe_branches_drop_only_invalid_configs() -> None:
    """The MoE space's branches remove nothing its constraints would keep (checked on a sample of problems)."""
    space = get_kernel("mxfp4_moe").space
    flat = ConfigSpace(params=space.params, default=space.default, constraints=space.constraints)
    kept = {config_key(c) for c in space.configs()}
    problem = get_kernel("mxfp4_moe").problem(dict(M=8, K=4096, I=256, E=256, top_k=6))
    for config in flat.configs():
        if config_key(config) not in kept:
            assert flat.check(config, problem) is not None, config
