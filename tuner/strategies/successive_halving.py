"""Successive halving: cheap timing of every candidate, then careful timing of the best 1/eta."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aotune.tuner.strategies import SCREEN, Known, Request, final_with_default, missing


@dataclass(frozen=True)
class SuccessiveHalving:
    eta: int = 4
    min_keep: int = 2
    name: str = "halving"

    def next_batch(self, candidates: Sequence[str], default_key: str, results: Mapping[tuple[str, str], Known],
                   seed: int) -> list[Request] | None:
        screen = missing([Request(k, "screen", SCREEN) for k in candidates], results)
        if screen:
            return screen
        timed = [(results[(k, "screen")].median_us, k) for k in candidates
                 if results[(k, "screen")].status == "ok" and results[(k, "screen")].median_us is not None]
        keep = max(self.min_keep, math.ceil(len(timed) / self.eta))
        best = [k for _, k in sorted(timed)[:keep]]
        default_ok = (default_key, "screen") in results and results[(default_key, "screen")].status == "ok"
        return missing(final_with_default(best, default_key if default_ok else "", candidates), results)
