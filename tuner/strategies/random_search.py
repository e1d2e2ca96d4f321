"""Random search: a seeded sample of the valid candidates (plus the required configs), timed carefully.

The sample is drawn from every valid candidate, failures included, so that it is the same sample in
every round and after a resume; configs known to fail are then skipped, not replaced.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from aotune.tuner.strategies import Request, Results, final, missing


@dataclass(frozen=True)
class RandomSearch:
    samples: int = 16
    name: str = "random"

    def next_batch(self, candidates: Sequence[str], required: Sequence[str], results: Results,
                   seed: int) -> list[Request] | None:
        picked = random.Random(seed).sample(list(candidates), min(self.samples, len(candidates)))
        return missing(final(picked, required, candidates), results)
