"""Successive halving: cheap timing of every candidate, then careful timing of the best 1/eta (and of the
required configs that passed the screen)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from aotune.tuner.strategies import SCREEN, Request, Results, failed, final, missing


@dataclass(frozen=True)
class SuccessiveHalving:
    eta: int = 4
    min_keep: int = 2
    name: str = "halving"

    def next_batch(self, candidates: Sequence[str], required: Sequence[str], results: Results,
                   seed: int) -> list[Request] | None:
        screen = missing([Request(k, "screen", SCREEN) for k in candidates], results)
        if screen:
            return screen
        bad = failed(results)
        timed = sorted((results[(k, "screen")].median_us or 0.0, k) for k in candidates
                       if k not in bad and (k, "screen") in results)
        keep = max(self.min_keep, math.ceil(len(timed) / self.eta))
        passed = {k for _, k in timed}
        return missing(final([k for _, k in timed[:keep]], [k for k in required if k in passed], candidates),
                       results)
