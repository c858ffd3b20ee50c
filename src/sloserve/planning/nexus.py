"""Nexus-style planning (Shen et al., SOSP 2019), the baseline Harpagon is measured against.

Paper rules: one configuration per module, with the largest batch whose execution fits half the
module's budget (``2·d(b) <= B``: under round-robin dispatch a full machine collects its batch in
about ``d(b)``); as many fully loaded machines as the rate allows; the residual rate of each module
runs on a node with a *duty cycle* ``D`` (one batch of ``D·r'`` requests every ``D`` seconds,
latency ``D + d(b')``), and residual nodes of different modules on one hardware type are merged
("squishy bin packing") when their batches fit one duty cycle. The SLO is split evenly or by
dynamic programming over the total machine count.

Spec (ours): the same latency model as the other planners (:mod:`~sloserve.planning.latency`)
under round-robin dispatch — each of ``n`` full machines at design utilization ``ρ`` collects its
batch in ``d/ρ`` and may wait ``d·A/n`` for itself — so the batch rule is
``d(b)·(1 + A/n + 1/ρ) <= B`` with ``n = max(1, floor(r / T))``, which is the paper's
``2·d(b) <= B`` when ``ρ = 1`` and the wait allowance is off. Each module takes the allowed config
with the most throughput per price. A duty-cycle node runs, every ``D``, a batch sized for the
``wait_quantile`` of the Poisson arrivals in ``D`` (all of them when the allowance is off) and
needs ``D + d(b) <= B``. The DP objective is the fractional price ``r·price/T``, minimised
exactly on the planners' budget grid; packing is best fit by occupancy, largest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import poisson

from sloserve.planning.assemble import infeasible_plan
from sloserve.planning.bruteforce import best_split
from sloserve.planning.latency import REL_TOL, FloatArray, IntArray
from sloserve.planning.plan import ModulePlan, Plan, PlanTuple, SharedGroup, SharedMember
from sloserve.planning.problem import ModuleTable, PlanningProblem, module_tables, path_indices

NexusSplit = Literal["dp", "even"]

CYCLE_GRID = 64
"""Duty cycles tried for a residual node: multiples of budget / CYCLE_GRID."""


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
    quantile: float | None
    """Batches hold this quantile of a cycle's Poisson arrivals (None: the mean, rounded up)."""

    def batch(self, cycle: FloatArray) -> IntArray:
        """The batch a node with duty cycle ``cycle`` must run for this residual."""
        mean = self.rate * np.asarray(cycle)
        b = np.ceil(mean - 1e-9) if self.quantile is None else poisson.ppf(self.quantile, mean)
        return np.maximum(b, 1).astype(np.int64)

    def member(self, cycle: float) -> SharedMember | None:
        """This residual on a node with duty cycle ``cycle``, or None if it cannot meet its budget."""
        b = int(self.batch(np.array(cycle)))
        if b > len(self.latency) or cycle + self.latency[b - 1] > self.budget * (1 + REL_TOL):
            return None
        return SharedMember(self.module, b, self.rate, float(self.latency[b - 1]))

    def own_cycle(self) -> float | None:
        """The duty cycle of a node of its own: the lowest occupancy ``d(b) / D`` on a fine grid."""
        cycle = self.budget * np.arange(1, CYCLE_GRID) / CYCLE_GRID
        b = self.batch(cycle)
        ok = b <= len(self.latency)
        exec_time = np.where(ok, self.latency[np.minimum(b, len(self.latency)) - 1], np.inf)
        ok &= (cycle + exec_time <= self.budget * (1 + REL_TOL)) & (exec_time <= cycle)
        if not ok.any():
            return None
        return float(cycle[int(np.argmin(np.where(ok, exec_time / cycle, np.inf)))])


def nexus_config(table: ModuleTable, budget: float) -> _Config | None:
    """The module's configuration: among configs with ``d·(1 + A/n + 1/ρ) <= B``, the one with the
    most throughput per price (None when none fits)."""
    n = np.maximum(1.0, np.floor(table.rate / table.capacity * (1 + REL_TOL)))
    ok = table.latency * (1 + table.wait / n + 1 / table.utilization) <= budget * (1 + REL_TOL)
    if not ok.any():
        return None
    j = int(np.argmax(np.where(ok, table.capacity / table.price, -np.inf)))
    return _Config(j, float(table.capacity[j]))


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


def _pack(residuals: list[_Residual]) -> list[SharedGroup]:
    """Squishy bin packing: best fit by occupancy, largest first, per hardware type.

    Every residual must have a duty cycle of its own (:meth:`_Residual.own_cycle`)."""
    items = []
    for r in residuals:
        cycle = r.own_cycle()
        assert cycle is not None
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


def _round_robin_tuple(table: ModuleTable, configs: IntArray, n: int, budget: float) -> PlanTuple | None:
    """``n`` round-robin machines carrying the module's whole rate with the largest batch of
    ``configs`` that fits, or None."""
    for j in configs[np.argsort(-table.batch[configs], kind="stable")]:
        d, b = float(table.latency[j]), int(table.batch[j])
        wait = d * float(table.wait[j]) / n
        per_machine = table.rate / n
        if per_machine <= table.capacity[j] and d + wait + b / per_machine <= budget * (1 + REL_TOL):
            return PlanTuple(
                table.hardware[int(table.hw[j])],
                b,
                n,
                table.rate,
                0.0,
                d,
                wait,
                float(table.utilization[j]),
                float(table.price[j]),
            )
    return None


def plan_nexus(problem: PlanningProblem, split: NexusSplit = "dp") -> Plan:
    """Nexus-style plan of ``problem`` (round-robin dispatch, residual nodes packed)."""
    plan = _plan(problem, split)
    return plan


def _plan(problem: PlanningProblem, split: NexusSplit) -> Plan:
    app = problem.app
    name = f"nexus-{split}"
    tables = module_tables(problem)
    budgets = problem.budgets()
    paths = path_indices(app, [t.name for t in tables])
    if split == "dp":
        ks = best_split([fractional_costs(t, budgets) for t in tables], paths, problem.grid_steps)
    else:
        ks = _even_split(problem, paths, len(tables))
    if ks is None:
        return infeasible_plan(app, name, "no split gives every module a batch that fits its budget")
    modules: list[ModulePlan] = []
    residuals: list[_Residual] = []
    for table, k in zip(tables, ks, strict=True):
        part = _module_plan(table, float(budgets[k]), problem.wait_quantile)
        if isinstance(part, str):
            return infeasible_plan(app, name, part)
        modules.append(part[0])
        if part[1] is not None:
            residuals.append(part[1])
    return Plan(app.name, name, app.slo, app.rate, True, tuple(modules), app.edges, tuple(_pack(residuals)))


def _module_plan(
    table: ModuleTable, budget: float, quantile: float | None
) -> tuple[ModulePlan, _Residual | None] | str:
    """One module's full machines and its residual node (if any), or why it cannot be served."""
    cfg = nexus_config(table, budget)
    if cfg is None:
        return f"module {table.name!r}: no batch fits its {budget * 1e3:g} ms budget"
    j = cfg.config
    full = math.floor(table.rate / cfg.throughput * (1 + REL_TOL))
    hw_name = table.hardware[int(table.hw[j])]
    price = float(table.price[j])
    d = float(table.latency[j])
    tuples: tuple[PlanTuple, ...] = ()
    if full:
        tuples = (
            PlanTuple(
                hw_name,
                int(table.batch[j]),
                full,
                full * cfg.throughput,
                0.0,
                d,
                d * float(table.wait[j]) / full,
                float(table.utilization[j]),
                price,
            ),
        )
    residual = None
    rest = table.rate - full * cfg.throughput
    if rest > table.rate * REL_TOL:
        same = (table.hw == table.hw[j]) & (table.utilization == table.utilization[j])
        residual = _Residual(table.name, hw_name, price, rest, budget, table.latency[same], quantile)
        if residual.own_cycle() is None:  # too little load for a duty cycle: one more machine takes it
            extra = _round_robin_tuple(table, np.flatnonzero(same), full + 1, budget)
            if extra is None:
                return f"module {table.name!r}: its residual fits neither a duty cycle nor one more machine"
            tuples, residual = (extra,), None
    return ModulePlan(table.name, table.model, table.rate, budget, "round_robin", tuples), residual
