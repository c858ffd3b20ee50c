"""A module's configuration as the planners exchange it, and the cost table over the budget grid.

A choice names configs of a :class:`~sloserve.planning.problem.ModuleTable` and machine counts; the
rates and dummy rates of its tuples follow from the budget when the plan is assembled
(:mod:`sloserve.planning.assemble`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sloserve.planning.problem import FloatArray


@dataclass(frozen=True, slots=True)
class TupleChoice:
    """``count`` machines of config ``config`` (an index into the module's table)."""

    config: int
    count: int


@dataclass(frozen=True, slots=True)
class ModuleChoice:
    """The tuples one module runs and their price per hour."""

    cost: float
    tuples: tuple[TupleChoice, ...]


NO_CHOICE = ModuleChoice(math.inf, ())
"""What a module gets at a budget no configuration fits."""


@dataclass(frozen=True, slots=True)
class CostTable:
    """A module's cost at every grid budget ``k · step`` (k = 0..grid_steps; ``inf``: infeasible).

    ``choice(k)`` rebuilds the configuration behind ``cost[k]`` on demand, so splitting reads only
    the numbers. ``cost`` is non-increasing: a configuration that fits a budget fits every larger one.
    """

    cost: FloatArray
    choice: Callable[[int], ModuleChoice]

    @property
    def first_feasible(self) -> int | None:
        """Smallest budget index with a finite cost, or None when none fits."""
        finite = np.flatnonzero(np.isfinite(self.cost))
        return int(finite[0]) if len(finite) else None


def monotone_envelope(cost: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """Running minimum of ``cost`` and, per index, the index whose configuration achieves it."""
    env = np.minimum.accumulate(cost)
    improved = np.concatenate(([True], env[1:] < env[:-1]))
    src = np.maximum.accumulate(np.where(improved, np.arange(len(cost)), 0))
    return env, src
