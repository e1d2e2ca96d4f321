"""Declarative, typed config spaces: parameters, constraints, a default and named baseline sets.

A config is a plain ``dict[str, int | str]`` (``num_warps`` and ``num_stages`` included). A space
enumerates the cartesian product of its parameters; constraint predicates remove candidates that
cannot be meaningful for a problem ("invalid", not a failure) and say why. Optional ``branches`` narrow
the product per value of one parameter (e.g. the MoE's PATH: tile sizes that only one code path uses
are not crossed with the others), so that a space of several code paths enumerates the sum of their
products, not the product of all their values; the constraints stay the rule for what is valid.
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
    # (parameter, {value: {other parameter: its values when the first one has that value}})
    branches: tuple[str, Mapping[Any, Mapping[str, Param]]] | None = None

    def __post_init__(self) -> None:
        missing = set(self.params) - set(self.default)
        if missing:
            raise ValueError(f"default config lacks parameters {sorted(missing)}")
        if self.branches is not None:
            name, by_value = self.branches
            if name not in self.params or set(by_value) - set(self.params[name].values()):
                raise ValueError(f"branches: {name!r} and its values must be a parameter and its values")
            for value, params in by_value.items():
                for other, param in params.items():
                    if other not in self.params or set(param.values()) - set(self.params[other].values()):
                        raise ValueError(f"branches[{value!r}]: {other!r} must be a parameter and its values "
                                         f"among the parameter's; parameters: {list(self.params)}")

    def _products(self) -> Iterator[dict[str, Param]]:
        """The parameter sets whose products make up the space: one, or one per branch value."""
        if self.branches is None:
            yield dict(self.params)
            return
        name, by_value = self.branches
        for value in self.params[name].values():
            yield {**self.params, **by_value.get(value, {}), name: Choice(value)}

    def configs(self) -> Iterator[Config]:
        """Every point of the space (of each branch's cartesian product), in a stable order."""
        names = list(self.params)
        for params in self._products():
            for values in itertools.product(*(params[n].values() for n in names)):
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
        branches = self.branches
        if branches is not None:  # each branch keeps its allowed values; a branch left without any is dropped
            name, by_value = branches
            kept = {value: {other: [v for v in param.values() if v in params[other].values()]
                            for other, param in branch.items()} for value, branch in by_value.items()}
            dropped = {value for value, branch in kept.items() if not all(branch.values())}
            values = [v for v in params[name].values() if v not in dropped]
            if not values:
                raise ValueError(f"restrict: no value of {name!r} has a config left")
            params[name] = Choice(*values)
            branches = (name, {value: {other: Choice(*vs) for other, vs in branch.items()}
                               for value, branch in kept.items() if value in values})
        return dataclasses.replace(self, params=params, branches=branches)

    def baseline(self, name: str) -> Sequence[Config]:
        """A named baseline set (e.g. the upstream hand-picked configs); KeyError names the choices."""
        if name not in self.baselines:
            raise KeyError(f"no baseline set {name!r}; known: {sorted(self.baselines)}")
        return self.baselines[name]

    def size(self) -> int:
        """How many configs ``configs()`` yields."""
        total = 0
        for params in self._products():
            product = 1
            for param in params.values():
                product *= len(param.values())
            total += product
        return total
