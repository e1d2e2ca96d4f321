"""Search strategies: small classes behind one Protocol, one file each, registered by name.

A strategy is a pure function of what is known: given every valid candidate of the problem, the configs
that must be timed (the default first, then the grid's included baseline sets), the results so far
(failures included) and a seed derived from the problem, it returns the next batch of requests, or None
when the problem is finished. Strategies skip configs known to fail. Being deterministic, a strategy
asks for the same trials again after a resume, and the driver finds them recorded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
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


Results = Mapping[tuple[str, str], Known]


class Strategy(Protocol):
    name: str

    def next_batch(self, candidates: Sequence[str], required: Sequence[str], results: Results,
                   seed: int) -> list[Request] | None:
        """Requests still needed (already-known ones may be repeated: the driver skips them), or None."""
        ...


def failed(results: Results) -> set[str]:
    """Configs with any recorded result other than ok (never worth another trial)."""
    return {key for (key, _stage), known in results.items() if known.status != "ok"}


def missing(requests: list[Request], results: Results) -> list[Request] | None:
    """``requests`` not yet answered and not known to fail; None if none is left (the strategy is done)."""
    bad = failed(results)
    todo = [r for r in requests if (r.config_key, r.stage) not in results and r.config_key not in bad]
    return todo or None


def final(keys: Sequence[str], required: Sequence[str], candidates: Sequence[str]) -> list[Request]:
    """Careful ("final") requests for ``keys`` and the required configs that are candidates, deduplicated."""
    allowed = set(candidates)
    ordered = dict.fromkeys([*keys, *(k for k in required if k in allowed)])
    return [Request(k, "final", CAREFUL) for k in ordered]


def strategy_id(strategy: Strategy) -> str:
    """The strategy's name and a hash of its settings: a problem finished with other settings is redone."""
    settings = dataclasses.asdict(strategy) if dataclasses.is_dataclass(strategy) else {}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{strategy.name}:{digest}"


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


__all__ = ["CAREFUL", "SCREEN", "Known", "Request", "Results", "Strategy", "failed", "final", "get_strategy",
           "missing", "strategy_id"]
