"""Exhaustive search: every valid candidate, timed carefully once."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aotune.tuner.strategies import Request, Results, final, missing


@dataclass(frozen=True)
class Exhaustive:
    name: str = "exhaustive"

    def next_batch(self, candidates: Sequence[str], required: Sequence[str], results: Results,
                   seed: int) -> list[Request] | None:
        return missing(final(candidates, required, candidates), results)
