"""Random search: a seeded sample of the feasible candidates (plus the default), timed carefully."""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aotune.tuner.strategies import Known, Request, final_with_default, missing


@dataclass(frozen=True)
class RandomSearch:
    samples: int = 16
    name: str = "random"

    def next_batch(self, candidates: Sequence[str], default_key: str, results: Mapping[tuple[str, str], Known],
                   seed: int) -> list[Request] | None:
        picked = random.Random(seed).sample(list(candidates), min(self.samples, len(candidates)))
        return missing(final_with_default(picked, default_key, candidates), results)
