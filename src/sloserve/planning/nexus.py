"""Nexus-style planning (Shen et al., SOSP 2019), the baseline Harpagon is measured against.

Paper rules: one configuration per module, with the largest batch whose execution fits half the
module's budget (``2·d(b) <= B``: under round-robin dispatch a full machine collects its batch in
about ``d(b)``); as many fully loaded machines as the rate allows; the residual rate of each module
runs on a node with a *duty cycle* ``D`` (one batch of ``D·r'`` requests every ``D`` seconds,
latency ``D + d(b')``), and residual nodes of different modules on one hardware type are merged
("squishy bin packing") when their batches fit one duty cycle. The SLO is split evenly or by
dynamic programming over the total machine count.

Spec (ours): machine capacity includes the problem's ``max_utilization`` ρ, so the batch rule is
``d(b)·(1 + 1/ρ) <= B`` (the paper's rule when ρ = 1); each module takes the hardware type with the
most throughput per price at its batch; the DP objective is the fractional price ``r·price/T`` and
is minimised exactly on the planners' budget grid; packing is best fit by occupancy, largest first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from sloserve.planning.assemble import infeasible_plan
from sloserve.planning.bruteforce import best_split
from sloserve.planning.plan import ModulePlan, Plan, PlanTuple, SharedGroup, SharedMember
from sloserve.planning.problem import FloatArray, ModuleTable, PlanningProblem, module_tables, path_indices

NexusSplit = Literal["dp", "even"]


@dataclass(frozen=True, slots=True)
class _Config:
    """A module's single Nexus configuration at one budget."""

    config: int  # index into the module table
    throughput: float  # requests per second of one full machine


@dataclass(frozen=True, slots=True)
class _Residual:
    """A module's residual rate, to be served by a (possibly shared) duty-cycle node."""

    module: str
    hardware: str
    price: float
    rate: float
    budget: float
    latency: FloatArray
    """``d(b)`` on the node's hardware for b = 1..max batch."""

    def batch(self, cycle: float) -> int:
        """Requests that arrive in one duty cycle: the batch the node runs."""
        return max(1, math.ceil(self.rate * cycle - 1e-9))

    def member(self, cycle: float) -> SharedMember | None:
        """This residual on a node with duty cycle ``cycle``, or None if it cannot meet its budget."""
        b = self.batch(cycle)
        if b > len(self.latency) or cycle + self.latency[b - 1] > self.budget * (1 + 1e-9):
            return None
        return SharedMember(self.module, b, self.rate, float(self.latency[b - 1]))

    def own_cycle(self) -> float | None:
        """The duty cycle of a node of its own: the one with the lowest occupancy ``d(b) / D``."""
        b = np.arange(1, len(self.latency) + 1)
        cycle = np.minimum(b / self.rate, self.budget - self.latency)
        ok = (cycle > 0) & (self.rate * cycle > b - 1 + 1e-9)
        if not ok.any():
            return None
        occupancy = np.where(ok, self.latency / np.where(ok, cycle, 1.0), np.inf)
        return float(cycle[int(np.argmin(occupancy))])


def nexus_config(table: ModuleTable, budget: float) -> _Config | None:
    """The module's configuration: per type the largest batch with ``d·(1 + 1/ρ) <= B``, then the
    type with the most throughput per price (None when no batch fits)."""
    rho = table.max_utilization
    ok = table.latency * (1 + 1 / rho) <= budget
    if not ok.any():
        return None
    best: _Config | None = None
    best_ratio = -math.inf
    for h in np.unique(table.hw[ok]):
        idx = np.flatnonzero(ok & (table.hw == h))
        j = int(idx[np.argmax(table.batch[idx])])
        ratio = float(table.capacity[j] / table.price[j])
        if ratio > best_ratio:
            best, best_ratio = _Config(j, float(table.capacity[j])), ratio
    return best


def fractional_costs(table: ModuleTable, budgets: FloatArray) -> FloatArray:
    """Nexus's DP objective per budget: ``rate / T · price`` (``inf`` where nothing fits)."""
    out = np.full(len(budgets), math.inf)
    for k, b in enumerate(budgets):
        c = nexus_config(table, float(b))
        if c is not None:
            out[k] = table.rate / c.throughput * float(table.price[c.config])
    return out


def _even_split(problem: PlanningProblem, paths: list[tuple[int, ...]], n: int) -> list[int]:
    longest = [max((len(p) for p in paths if m in p), default=1) for m in range(n)]
    return [problem.grid_steps // length for length in longest]


def _fit(members: list[_Residual], cycle: float) -> list[SharedMember] | None:
    """The members' batches on one node with duty cycle ``cycle``, or None if they do not fit it."""
    out = [m.member(cycle) for m in members]
    if any(m is None for m in out):
        return None
    fitted = [m for m in out if m is not None]
    return fitted if sum(m.exec_time for m in fitted) <= cycle * (1 + 1e-9) else None


def _pack(residuals: list[_Residual]) -> list[SharedGroup] | None:
    """Squishy bin packing: best fit by occupancy, largest first, per hardware type."""
    items = []
    for r in residuals:
        cycle = r.own_cycle()
        if cycle is None:
            return None
        own = r.member(cycle)
        assert own is not None
        items.append((own.exec_time / cycle, cycle, r))
    items.sort(key=lambda it: -it[0])
    nodes: list[tuple[list[_Residual], float]] = []  # (members, duty cycle)
    for _, cycle, r in items:
        best_i, best_busy = -1, -1.0
        for i, (members, node_cycle) in enumerate(nodes):
            if members[0].hardware != r.hardware:
                continue
            merged = min(node_cycle, cycle)
            fitted = _fit([*members, r], merged)
            if fitted is not None and (busy := sum(m.exec_time for m in fitted) / merged) > best_busy:
                best_i, best_busy = i, busy
        if best_i < 0:
            nodes.append(([r], cycle))
        else:
            members, node_cycle = nodes[best_i]
            nodes[best_i] = ([*members, r], min(node_cycle, cycle))
    groups = []
    for members, cycle in nodes:
        fitted = _fit(members, cycle)
        assert fitted is not None
        groups.append(SharedGroup(members[0].hardware, members[0].price, cycle, tuple(fitted)))
    return groups


def plan_nexus(problem: PlanningProblem, split: NexusSplit = "dp") -> Plan:
    """Nexus-style plan of ``problem`` (round-robin dispatch, residual nodes packed)."""
    start = time.perf_counter()
    app = problem.app
    if app.rate <= 0:
        raise ValueError(f"app {app.name!r}: planning needs an input rate > 0, got {app.rate}")
    tables = module_tables(problem)
    budgets = np.arange(problem.grid_steps + 1) * problem.step
    paths = path_indices(app, [t.name for t in tables])
    if split == "dp":
        ks = best_split([fractional_costs(t, budgets) for t in tables], paths, problem.grid_steps)
    else:
        ks = _even_split(problem, paths, len(tables))
    name = f"nexus-{split}"
    if ks is None:
        return replace(infeasible_plan(app, name, "no split gives every module a batch within half its budget"),
                       planning_time=time.perf_counter() - start)
    modules: list[ModulePlan] = []
    residuals: list[_Residual] = []
    for table, k in zip(tables, ks, strict=True):
        budget = float(budgets[k])
        cfg = nexus_config(table, budget)
        if cfg is None:
            return replace(infeasible_plan(app, name, f"module {table.name!r}: no batch fits half of "
                                           f"its {budget * 1e3:g} ms budget"),
                           planning_time=time.perf_counter() - start)
        j = cfg.config
        full = math.floor(table.rate / cfg.throughput * (1 + 1e-9))
        hw_name = table.hardware[int(table.hw[j])]
        price = float(table.price[j])
        tuples = ()
        if full:
            tuples = (PlanTuple(hw_name, int(table.batch[j]), full, full * cfg.throughput, 0.0,
                                float(table.latency[j]), price),)
        rest = table.rate - full * cfg.throughput
        if rest > table.rate * 1e-9:
            lat = table.latency[table.hw == table.hw[j]]
            residuals.append(_Residual(table.name, hw_name, price, rest, budget, lat))
        modules.append(ModulePlan(table.name, table.model, table.rate, budget, "round_robin", tuples))
    shared = _pack(residuals)
    if shared is None:
        return replace(infeasible_plan(app, name, "a residual rate fits no duty cycle"),
                       planning_time=time.perf_counter() - start)
    plan = Plan(app.name, name, app.slo, app.rate, True, tuple(modules), app.edges, tuple(shared))
    return replace(plan, planning_time=time.perf_counter() - start)
