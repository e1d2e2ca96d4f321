"""Search strategies: small classes behind one Protocol, one file each, registered by name.

A strategy is a pure function of what is known: given the feasible candidates and the results so far,
it returns the next batch of requests, or None when the problem is finished. Being deterministic (seeded
by the problem), it asks for the same trials again after a resume, which the driver finds recorded.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aotune.tuner.timing import CAREFUL, SCREEN, TimingSettings


@dataclass(frozen=True)
class Request:
    config_key: str
    stage: str
    timing: TimingSettings


@dataclass(frozen=True)
class Known:
    """What a strategy may know of one (config, stage) result."""

    status: str
    median_us: float | None


class Strategy(Protocol):
    name: str

    def next_batch(self, candidates: Sequence[str], default_key: str, results: Mapping[tuple[str, str], Known],
                   seed: int) -> list[Request] | None:
        """Requests still needed (already-known ones may be repeated: the driver skips them), or None."""
        ...


def missing(requests: list[Request], results: Mapping[tuple[str, str], Known]) -> list[Request] | None:
    """``requests`` not yet answered; None if all are (the strategy is done)."""
    todo = [r for r in requests if (r.config_key, r.stage) not in results]
    return todo or None


def final_with_default(keys: Sequence[str], default_key: str, candidates: Sequence[str]) -> list[Request]:
    ordered = list(dict.fromkeys([*keys, *([default_key] if default_key in candidates else [])]))
    return [Request(k, "final", CAREFUL) for k in ordered]


def _registry() -> dict[str, Callable[..., Strategy]]:
    from aotune.tuner.strategies.exhaustive import Exhaustive
    from aotune.tuner.strategies.random_search import RandomSearch
    from aotune.tuner.strategies.successive_halving import SuccessiveHalving

    return {"exhaustive": Exhaustive, "random": RandomSearch, "halving": SuccessiveHalving}


def get_strategy(name: str, **settings: Any) -> Strategy:
    """The strategy ``name`` ("exhaustive", "random", "halving"); ValueError lists the known ones."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(registry)}")
    return registry[name](**settings)


__all__ = ["CAREFUL", "SCREEN", "Known", "Request", "Strategy", "get_strategy", "missing", "final_with_default"]
