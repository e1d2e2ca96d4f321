"""Declarative, typed config spaces: parameters, constraints, a default and named baseline sets.

A config is a plain ``dict[str, int | str]`` (``num_warps`` and ``num_stages`` included). A space
enumerates the cartesian product of its parameters; constraint predicates remove candidates that
cannot be meaningful for a problem ("invalid", not a failure) and say why.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

Config = dict[str, Any]
# A constraint returns None when the config is valid for the problem, else the reason it is not.
Constraint = Callable[[Config, Any], Union[str, None]]


def config_key(config: Mapping[str, Any]) -> str:
    """Canonical string of a config: JSON with sorted keys, no spaces. Never parse it back."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Pow2:
    """Powers of two from ``low`` to ``high`` inclusive."""

    low: int
    high: int

    def __post_init__(self) -> None:
        for bound in (self.low, self.high):
            if bound < 1 or bound & (bound - 1):
                raise ValueError(f"Pow2 bounds must be powers of two, got {bound}")
        if self.low > self.high:
            raise ValueError(f"Pow2 low {self.low} > high {self.high}")

    def values(self) -> tuple[int, ...]:
        out, value = [], self.low
        while value <= self.high:
            out.append(value)
            value *= 2
        return tuple(out)


@dataclass(frozen=True)
class Choice:
    """An explicit list of values."""

    options: tuple[Any, ...]

    def __init__(self, *options: Any) -> None:
        if not options:
            raise ValueError("Choice needs at least one option")
        object.__setattr__(self, "options", tuple(options))

    def values(self) -> tuple[Any, ...]:
        return self.options


Param = Union[Pow2, Choice]


@dataclass(frozen=True)
class Candidate:
    """One point of a space for one problem; ``invalid_reason`` is set when a constraint removed it."""

    config: Config
    invalid_reason: str | None = None


@dataclass(frozen=True)
class ConfigSpace:
    """Parameters, constraints, the default config and named baseline sets of one kernel."""

    params: Mapping[str, Param]
    default: Config
    constraints: Sequence[Constraint] = ()
    baselines: Mapping[str, Sequence[Config]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = set(self.params) - set(self.default)
        if missing:
            raise ValueError(f"default config lacks parameters {sorted(missing)}")

    def configs(self) -> Iterator[Config]:
        """Every point of the cartesian product, in a stable order."""
        names = list(self.params)
        for values in itertools.product(*(self.params[n].values() for n in names)):
            yield dict(zip(names, values))

    def check(self, config: Config, problem: Any) -> str | None:
        """None when ``config`` is valid for ``problem``, else the first constraint's reason."""
        for constraint in self.constraints:
            reason = constraint(config, problem)
            if reason:
                return reason
        return None

    def candidates(self, problem: Any, *, include: Sequence[str] = ()) -> list[Candidate]:
        """All configs of the space (plus the named baseline sets in ``include``), checked for ``problem``.

        The default config is always part of the result; duplicates are removed.
        """
        seen: set[str] = set()
        out: list[Candidate] = []
        extra = [dict(c) for name in include for c in self.baseline(name)]
        for config in itertools.chain([dict(self.default)], self.configs(), extra):
            key = config_key(config)
            if key not in seen:
                seen.add(key)
                out.append(Candidate(config, self.check(config, problem)))
        return out

    def restricted(self, allowed: Mapping[str, Sequence[Any]]) -> ConfigSpace:
        """The same space with only the ``allowed`` values of some parameters (the default is kept as is).

        A name that is not a parameter, or values that leave a parameter empty, raise ValueError.
        """
        params: dict[str, Param] = dict(self.params)
        for name, values in allowed.items():
            if name not in params:
                raise ValueError(f"restrict: {name!r} is not a parameter; parameters: {list(params)}")
            kept = [v for v in params[name].values() if v in set(values)]
            if not kept:
                raise ValueError(f"restrict: no value of {name!r} left from {list(values)}")
            params[name] = Choice(*kept)
        return dataclasses.replace(self, params=params)

    def baseline(self, name: str) -> Sequence[Config]:
        """A named baseline set (e.g. the upstream hand-picked configs); KeyError names the choices."""
        if name not in self.baselines:
            raise KeyError(f"no baseline set {name!r}; known: {sorted(self.baselines)}")
        return self.baselines[name]

    def size(self) -> int:
        total = 1
        for param in self.params.values():
            total *= len(param.values())
        return total
