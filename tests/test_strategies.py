"""Strategies replayed on recorded trials (simulation mode): no GPU, no kernels run."""
from __future__ import annotations

import random

from aotune.tuner.select import Measured, pick_best
from aotune.tuner.strategies import Known, get_strategy

KEYS = [f"c{i}" for i in range(20)]
TIMES = {k: 10.0 + ((i * 7) % 20) for i, k in enumerate(KEYS)}  # recorded medians; c0 is not the fastest


def _replay(strategy_name: str, **options: object) -> tuple[dict[tuple[str, str], Known], int]:
    strategy = get_strategy(strategy_name, **options)
    results: dict[tuple[str, str], Known] = {}
    rounds = 0
    while (batch := strategy.next_batch(KEYS, ["c0"], results, seed=3)) is not None:
        rounds += 1
        for request in batch:
            results[(request.config_key, request.stage)] = Known("ok", TIMES[request.config_key])
        assert rounds < 10
    return results, rounds


def test_exhaustive_times_every_candidate_once() -> None:
    results, rounds = _replay("exhaustive")
    assert rounds == 1 and set(results) == {(k, "final") for k in KEYS}


def test_random_samples_plus_default_and_is_deterministic() -> None:
    results, _ = _replay("random", samples=5)
    again, _ = _replay("random", samples=5)
    assert results == again
    assert ("c0", "final") in results and 5 <= len(results) <= 6


def test_halving_screens_all_then_times_the_best_carefully() -> None:
    results, rounds = _replay("halving", eta=4)
    assert rounds == 2
    screened = {k for k, s in results if s == "screen"}
    finals = {k for k, s in results if s == "final"}
    assert screened == set(KEYS)
    fastest = sorted(KEYS, key=TIMES.get)[:5]
    assert finals == set(fastest) | {"c0"}


def test_halving_skips_a_failed_default_and_failed_candidates() -> None:
    strategy = get_strategy("halving", eta=2)
    results = {(k, "screen"): Known("ok", TIMES[k]) for k in KEYS}
    results[("c0", "screen")] = Known("crash", None)
    results[(min(KEYS, key=TIMES.get), "screen")] = Known("mismatch", None)
    batch = strategy.next_batch(KEYS, ["c0"], results, seed=0)
    assert batch is not None
    assert "c0" not in {r.config_key for r in batch}
    assert min(KEYS, key=TIMES.get) not in {r.config_key for r in batch}


def test_random_sample_is_stable_when_configs_fail() -> None:
    """Failures are skipped, not replaced: the same sample in every round (and after a resume)."""
    strategy = get_strategy("random", samples=4)
    results: dict = {}
    asked: list[str] = []
    while (batch := strategy.next_batch(KEYS, ["c0"], results, seed=5)) is not None:
        for request in batch:
            asked.append(request.config_key)
            ok = int(request.config_key[1:]) % 2 == 0
            results[(request.config_key, request.stage)] = Known("ok" if ok else "crash", 1.0 if ok else None)
    assert len(asked) == len(set(asked)) <= 5


def test_required_baselines_are_always_timed() -> None:
    strategy = get_strategy("random", samples=2)
    batch = strategy.next_batch(KEYS, ["c0", "c7", "not-a-candidate"], {}, seed=1)
    keys = {r.config_key for r in batch}
    assert {"c0", "c7"} <= keys and "not-a-candidate" not in keys


def test_strategy_id_changes_with_settings() -> None:
    from aotune.tuner.strategies import strategy_id

    assert strategy_id(get_strategy("random", samples=4)) != strategy_id(get_strategy("random", samples=8))
    assert strategy_id(get_strategy("exhaustive")).startswith("exhaustive:")


def test_winner_must_beat_noise_else_default_or_cheapest() -> None:
    def m(key: str, median: float, spread: float, shared: int = 0, warps: int = 4) -> Measured:
        return Measured(key, {"num_warps": warps}, median, median - spread, median + spread, shared)
    assert pick_best([m("d", 10.0, 0.1), m("x", 5.0, 0.1)], "d").config_key == "x"
    assert pick_best([m("d", 10.0, 0.5), m("x", 9.8, 0.5)], "d").config_key == "d"  # within noise
    tie = [m("x", 9.8, 0.5, shared=4096), m("y", 10.0, 0.5, shared=1024)]
    assert pick_best(tie, "d").config_key == "y"
    assert pick_best([], "d") is None
    random.seed(0)
