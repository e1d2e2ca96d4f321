"""Exhaustive search: every feasible candidate, timed carefully once."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aotune.tuner.strategies import Known, Request, final_with_default, missing


@dataclass(frozen=True)
class Exhaustive:
    name: str = "exhaustive"

    def next_batch(self, candidates: Sequence[str], default_key: str, results: Mapping[tuple[str, str], Known],
                   seed: int) -> list[Request] | None:
        return missing(final_with_default(candidates, default_key, candidates), results)
