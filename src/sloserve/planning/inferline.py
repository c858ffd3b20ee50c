"""InferLine-style greedy planning (Crankshaw et al., SoCC 2020), a second baseline.

Paper: start every model on its fastest hardware with batch 1 and enough replicas for the rate;
then repeatedly apply the cost-reducing action that keeps the pipeline within the SLO — increase
a model's batch size, remove a replica, or move a model to cheaper hardware — until none is left.
Each model has one centralized batched queue that idle replicas pull from.

Spec (ours): latencies come from the shared model (:mod:`~sloserve.planning.latency`) instead of
InferLine's simulator: one tuple per module, collected from the module's whole stream, so its
latency is ``d(b) + d(b)·A/n + b / r`` with ``n = ceil(r / c)`` machines at design utilization
``ρ``. The start uses the lowest ``ρ`` (the most headroom). *Increase batch* jumps to the
smallest larger batch that saves a replica (a step of one would rarely change the cost, and the
greedy only takes cost-reducing steps); *remove replica* moves to the next higher ``ρ`` (fewer
replicas, each busier); *downgrade* moves to the next cheaper hardware type at the largest batch
not above the current one. Budgets are the modules' latencies with the slack left on each path
spread in proportion.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sloserve.planning.assemble import infeasible_plan, module_plan
from sloserve.planning.choice import ModuleChoice, TupleChoice
from sloserve.planning.latency import REL_TOL
from sloserve.planning.plan import Plan
from sloserve.planning.problem import ModuleTable, PlanningProblem, module_tables, path_indices


@dataclass(frozen=True, slots=True)
class _State:
    """One module's configuration in the greedy search."""

    config: int
    count: int
    latency: float
    cost: float


def _state(table: ModuleTable, j: int) -> _State:
    n = max(1, math.ceil(table.rate / float(table.capacity[j]) * (1 - REL_TOL)))
    d = float(table.latency[j])
    lat = d + d * float(table.wait[j]) / n + int(table.batch[j]) / table.rate
    return _State(j, n, lat, n * float(table.price[j]))


def _actions(table: ModuleTable, s: _State) -> Iterator[_State]:
    """Configurations one action away from ``s`` (see the module docstring)."""
    j0 = s.config
    hw, batch, util = int(table.hw[j0]), int(table.batch[j0]), float(table.utilization[j0])
    same_hw = table.hw == hw
    larger = np.flatnonzero(same_hw & (table.utilization == util) & (table.batch > batch))
    for j in larger[np.argsort(table.batch[larger], kind="stable")]:
        nxt = _state(table, int(j))
        if nxt.count < s.count:
            yield nxt
            break
    busier = np.flatnonzero(same_hw & (table.batch == batch) & (table.utilization > util))
    if len(busier):
        yield _state(table, int(busier[np.argmin(table.utilization[busier])]))
    cheaper = table.price[table.price < table.price[j0]]
    if len(cheaper):
        down = np.flatnonzero(
            (table.price == cheaper.max()) & (table.utilization == util) & (table.batch <= batch)
        )
        if len(down):
            yield _state(table, int(down[np.argmax(table.batch[down])]))


def plan_inferline(problem: PlanningProblem) -> Plan:
    """InferLine-style plan of ``problem``."""
    app = problem.app
    tables = module_tables(problem)
    paths = path_indices(app, [t.name for t in tables])
    slo = app.slo * (1 + REL_TOL)

    def fits(states: list[_State]) -> bool:
        return all(sum(states[i].latency for i in p) <= slo for p in paths)

    states = []
    for t in tables:
        start_at = np.flatnonzero((t.batch == 1) & (t.utilization == t.utilization.min()))
        states.append(_state(t, int(start_at[np.argmin(t.latency[start_at])])))
    if not fits(states):
        plan = infeasible_plan(app, "inferline", "batch 1 on the fastest hardware already misses the SLO")
        return plan
    while True:
        best: tuple[float, float, int, _State] | None = None  # (saving, latency, module, state)
        for m, (t, s) in enumerate(zip(tables, states, strict=True)):
            for nxt in _actions(t, s):
                trial = [*states[:m], nxt, *states[m + 1 :]]
                saving = s.cost - nxt.cost
                if saving > REL_TOL * s.cost and fits(trial):
                    key = (saving, -nxt.latency, m, nxt)
                    if best is None or key[:2] > best[:2]:
                        best = key
        if best is None:
            break
        states[best[2]] = best[3]

    # Budgets: each module's latency, with every path's slack shared in proportion.
    path_latency = [sum(states[i].latency for i in p) for p in paths]
    scale = [
        min(app.slo / lat for p, lat in zip(paths, path_latency, strict=True) if m in p)
        for m in range(len(states))
    ]
    modules = tuple(
        module_plan(t, ModuleChoice(s.cost, (TupleChoice(s.config, s.count),)), s.latency * f)
        for t, s, f in zip(tables, states, scale, strict=True)
    )
    plan = Plan(app.name, "inferline", app.slo, app.rate, True, modules, app.edges)
    return plan
