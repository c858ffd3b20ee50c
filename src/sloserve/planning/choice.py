"""A module's configuration as the planners exchange it, and its cost over the budget grid.

Planners decide *how many machines of each hardware type* a module runs; :func:`choose_batches`
then picks each tuple's batch the same way for all of them, so plans differ only where the
planners' decisions do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from sloserve.planning.latency import REL_TOL, FloatArray, IntArray, min_stream_rate
from sloserve.planning.problem import ModuleTable


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


def monotone_envelope(cost: FloatArray) -> tuple[FloatArray, IntArray]:
    """Running minimum of ``cost`` and, per index, the index whose configuration achieves it."""
    env = np.minimum.accumulate(cost)
    improved = np.concatenate(([True], env[1:] < env[:-1]))
    src = np.maximum.accumulate(np.where(improved, np.arange(len(cost)), 0))
    return env, src


def choose_batches(table: ModuleTable, budget: float, counts: Mapping[int, int]) -> tuple[TupleChoice, ...]:
    """Tuples for ``counts`` (hardware index -> machines) under ``budget``.

    Each tuple starts at the batch with the most capacity its machine count lets fill in time
    (with dummies if need be). Then, while the module's real rate cannot fill every tuple's batches
    on its own, the tuple needing the fastest stream moves to a smaller batch that needs a slower
    one, as long as the tuples still carry the rate: dummies only where no smaller batch will do.
    """
    nmin = table.min_machines(np.array(budget))
    tuples: list[tuple[int, IntArray, FloatArray, FloatArray]] = []  # (count, configs, capacity, floor)
    for h, n in sorted(counts.items()):
        if n <= 0:
            continue
        configs = np.flatnonzero((table.hw == h) & (nmin <= n))
        if not len(configs):
            raise ValueError(f"module {table.name!r}: no batch on hardware {h} fits {n} machines")
        floor = np.array([floor_stream(table, int(j), n, budget) for j in configs])
        tuples.append((n, configs, table.capacity[configs] * n, floor))
    picks = [int(np.argmax(cap)) for _, _, cap, _ in tuples]  # positions in each tuple's configs
    rate = table.rate
    while sum(t[3][p] for t, p in zip(tuples, picks, strict=True)) > rate * (1 + REL_TOL):
        total = sum(float(t[2][p]) for t, p in zip(tuples, picks, strict=True))
        for i in sorted(range(len(tuples)), key=lambda i: -tuples[i][3][picks[i]]):
            _, _, cap, floor = tuples[i]
            spare = total - float(cap[picks[i]])
            alt = np.flatnonzero((floor < floor[picks[i]]) & (spare + cap >= rate * (1 - REL_TOL)))
            if len(alt):
                picks[i] = int(alt[np.argmax(cap[alt])])
                break
        else:
            break
    return tuple(TupleChoice(int(t[1][p]), t[0]) for t, p in zip(tuples, picks, strict=True))


def floor_stream(table: ModuleTable, config: int, count: int, budget: float) -> float:
    """Stream rate ``count`` machines of ``config`` need so their batches fill within ``budget``."""
    d = float(table.latency[config])
    return min_stream_rate(d, d * float(table.wait[config]) / count, int(table.batch[config]), budget)
