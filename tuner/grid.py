"""Shape grids: YAML files of problems per kernel, validated with pydantic.

A grid names entries; each entry has a kernel, a ``problem`` whose fields are scalars or lists (the
cartesian product is the problem set), optional baseline sets to ``include`` and an optional
``restrict`` of the space's parameters. Errors name the file, the entry and the field.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aotune.kernels import Candidate, ConfigSpace, get_kernel
from aotune.kernels.base import Kernel, Problem

Scalar = Union[int, float, str, bool]
GRIDS_DIR = Path(__file__).resolve().parent.parent / "configs" / "grids"


class GridError(ValueError):
    """A grid file that cannot be used; the message names the file, the entry and the field."""


class GridEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kernel: str
    label: str = ""
    problem: dict[str, Union[Scalar, list[Scalar]]]
    include: list[str] = Field(default_factory=list)
    restrict: dict[str, list[Scalar]] = Field(default_factory=dict)


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    entries: list[GridEntry] = Field(min_length=1)


@dataclass(frozen=True)
class PlannedProblem:
    """One problem of a grid, with the (restricted) space and baseline sets to search for it."""

    kernel: Kernel
    problem: Problem
    space: ConfigSpace
    include: tuple[str, ...]
    entry: str

    def candidates(self) -> list[Candidate]:
        """The restricted space's configs, the default and the included baseline sets, checked for the problem."""
        return self.space.candidates(self.problem, include=self.include)


def resolve_path(name_or_path: str) -> Path:
    """A grid file path, or a grid name shipped in ``aotune.configs`` (``smoke`` -> configs/grids/smoke.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = GRIDS_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in GRIDS_DIR.glob("*.yaml"))
    raise GridError(f"grid {name_or_path!r}: no such file and no shipped grid of that name; shipped: {known}")


def load_grid(name_or_path: str) -> Grid:
    """Parse and validate a grid file (structure, kernel names, problem fields, restrict and include)."""
    path = resolve_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML: {exc}") from None
    try:
        grid = Grid.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GridError(f"{path}: field {where}: {first['msg']}") from None
    for index, entry in enumerate(grid.entries):
        _check_entry(path, index, entry)
    return grid


def _check_entry(path: Path, index: int, entry: GridEntry) -> None:
    where = f"{path}: entries[{index}] ({entry.label or entry.kernel})"
    try:
        kernel = get_kernel(entry.kernel)
    except (ValueError, ImportError) as exc:
        raise GridError(f"{where}: field kernel: {exc}") from None
    for name, values in entry.restrict.items():
        if name not in kernel.space.params:
            raise GridError(f"{where}: field restrict.{name}: not a parameter of {kernel.name}; "
                            f"parameters: {list(kernel.space.params)}")
        allowed = set(kernel.space.params[name].values())
        if not set(values) <= allowed:
            raise GridError(f"{where}: field restrict.{name}: {sorted(set(values) - allowed)} not in {sorted(allowed)}")
    for name in entry.include:
        if name not in kernel.space.baselines:
            raise GridError(f"{where}: field include: no baseline set {name!r}; known: {sorted(kernel.space.baselines)}")
    for problem in _expand(entry.problem):
        try:
            kernel.problem(problem)
        except ValueError as exc:
            raise GridError(f"{where}: field problem: {exc}") from None


def _expand(problem: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(problem)
    lists = [v if isinstance(v, list) else [v] for v in problem.values()]
    return [dict(zip(names, values)) for values in itertools.product(*lists)]


def plan(grid: Grid, kernels: list[str] | None = None) -> list[PlannedProblem]:
    """Every (kernel, problem) of the grid with its restricted space (candidates are built when tuned)."""
    out: list[PlannedProblem] = []
    for entry in grid.entries:
        if kernels and entry.kernel not in kernels:
            continue
        kernel = get_kernel(entry.kernel)
        space = kernel.space.restricted(entry.restrict)
        for data in _expand(entry.problem):
            out.append(PlannedProblem(kernel, kernel.problem(data), space, tuple(entry.include),
                                      entry.label or entry.kernel))
    return out
