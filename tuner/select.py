"""Choosing the winner of a problem: fastest by median, but only by more than the measured noise.

Contenders are the ok final-stage trials whose median lies within the fastest trial's spread (its p80).
Among contenders the default config wins if it is one (nothing to gain by changing it); otherwise the
config that is cheapest in resources (least shared memory, then fewest warps, then fastest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Measured:
    config_key: str
    config: dict[str, Any]
    median_us: float
    p20_us: float
    p80_us: float
    shared_bytes: int = 0
    trial_id: int | None = None


def pick_best(results: list[Measured], default_key: str | None) -> Measured | None:
    """The winner among ``results`` (see the module docstring); None when nothing ran ok."""
    if not results:
        return None
    fastest = min(results, key=lambda m: m.median_us)
    noise_bound = max(fastest.p80_us, fastest.median_us)
    contenders = [m for m in results if m.median_us <= noise_bound]
    for m in contenders:
        if m.config_key == default_key:
            return m
    return min(contenders, key=lambda m: (m.shared_bytes, m.config.get("num_warps", 0), m.median_us))
